//! DKIM as a receiver checks it: keys made by `openssl` in the three forms
//! operators have (RSA PKCS#1, RSA PKCS#8 as `openssl genrsa` writes today,
//! Ed25519), the TXT record `casewire check` prints as the only DNS answer,
//! mail captured by a real SMTP server (aiosmtpd), and dkimpy, an
//! independent implementation, verifying each message. SQLite and PostgreSQL.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::dkim::{assert_signed, dkimpy_verify, openssl_key, published_record, KEY_KINDS};
use support::smtp::SmtpServer;
use support::{prepare, study, AppOptions, Engine, TestDb, TestSite};

const EDITION: &str = r#"
[[editions]]
slug = "weekly"
name = "Weekly"
schedule = "0 8 * * MON"
timezone = "Europe/Berlin"
"#;

fn casewire(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sites of these tests: the default test site with the weekly edition.
fn options(engine: Engine) -> AppOptions {
    AppOptions::new(engine).editions(EDITION)
}

/// Rewrites the site's config to send through `server` and sign with
/// `key_file`; returns the config file.
fn write_config(site: &mut TestSite, server: &SmtpServer, key_file: &Path) -> PathBuf {
    let signing = options(site.options().engine())
        .smtp(server)
        .mail("timeout_seconds = 10")
        .mail("welcome = true")
        .mail(format!(
            "dkim = {{ selector = \"cw1\", domain = \"notes.example.com\", key_file = \"{}\" }}",
            key_file.display()
        ))
        // PostgreSQL keeps no file of its own: the link key goes in the test's folder.
        .database("key_file = \"{root}/links.key\"");
    site.rewrite(signing);
    assert!(
        site.config_text.contains("dkim = "),
        "the mail section has the key"
    );
    site.config_path.clone()
}

async fn digests_verify_with_every_key_form(engine: Engine) {
    let mut site = prepare(options(engine));
    let root = site.root.clone();
    let server = SmtpServer::start(&[]);
    for (n, (kind, args)) in KEY_KINDS.iter().enumerate() {
        let key_file = root.join(format!("{kind}.pem"));
        openssl_key(args, &key_file);
        let config = write_config(&mut site, &server, &key_file);
        let (name, record) = published_record(&ok(&casewire(&config, &["check"])));
        assert_eq!(name, "cw1._domainkey.notes.example.com");
        let k = if *kind == "ed25519" { "ed25519" } else { "rsa" };
        assert!(
            record.starts_with(&format!("v=DKIM1; k={k}; p=")),
            "{record}"
        );
        if n == 0 {
            // First run on the store: seeds the ledger, sends nothing.
            ok(&casewire(&config, &["digest", "send", "weekly"]));
        }
        let reader = format!("reader-{kind}@example.org");
        ok(&casewire(
            &config,
            &["subscribers", "add", &reader, "--editions", "weekly"],
        ));
        std::fs::write(
            root.join(format!("content/{kind}.md")),
            study(
                &format!("Story signed with {kind}"),
                kind,
                "2025-02-01T00:00:00Z",
                &["databases"],
            ),
        )
        .unwrap();
        ok(&casewire(&config, &["digest", "send", "weekly"]));
        let got = server.received_by(&reader);
        assert_eq!(got.len(), 1, "one digest for {reader}");
        assert!(got[0].contains(&format!("Story signed with {kind}")));
        let algorithm = if k == "rsa" {
            "rsa-sha256"
        } else {
            "ed25519-sha256"
        };
        assert_signed(got[0].as_bytes(), &name, &record, algorithm);

        // The same message with its List-Unsubscribe changed fails: it is signed.
        let tampered = got[0].replacen(
            "List-Unsubscribe: <https://",
            "List-Unsubscribe: <http://",
            1,
        );
        assert_ne!(tampered, got[0]);
        let (verified, log) = dkimpy_verify(tampered.as_bytes(), &name, &record);
        assert!(
            !verified,
            "a changed List-Unsubscribe still verifies:\n{log}"
        );
    }
}
on_both_engines!(
    digests_verify_with_every_key_form,
    digests_verify_with_every_key_form
);

/// A key that cannot sign is a configuration error `check` reports with the file.
#[test]
fn check_names_a_key_it_cannot_use() {
    let site = prepare(options(Engine::Sqlite).mail(
        "dkim = { selector = \"cw1\", domain = \"notes.example.com\", key_file = \"{root}/dsa.pem\" }",
    ));
    let key_file = site.root.join("dsa.pem");
    std::fs::write(
        &key_file,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let config = &site.config_path;
    let out = casewire(&config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("[mail] dkim key_file {}:", key_file.display()))
            && stdout.contains("not a private key"),
        "{stdout}"
    );
}

/// Every link token in a delivered message (confirm, preferences and
/// unsubscribe URLs, and the mailto unsubscribe subject).
fn link_tokens(message: &str) -> Vec<String> {
    let unfolded = message.replace("=\r\n", "").replace("=3D", "=");
    let mut out = Vec::new();
    for marker in [
        "/confirm/",
        "/preferences/",
        "/unsubscribe/",
        "subject=unsubscribe%20",
    ] {
        for (at, _) in unfolded.match_indices(marker) {
            let token: String = unfolded[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if token.len() >= 43 {
                out.push(token);
            }
        }
    }
    out
}

/// Every text value stored in the database: the raw bytes of the SQLite
/// file and its WAL, or every text column of every PostgreSQL table.
async fn everything_stored(db: &TestDb, root: &Path) -> Vec<u8> {
    match db.engine {
        Engine::Sqlite => {
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-journal"] {
                let file = root.join(format!("casewire.db{suffix}"));
                if let Ok(b) = std::fs::read(&file) {
                    bytes.extend(b);
                }
            }
            assert!(bytes.len() > 4096, "the SQLite file was read");
            bytes
        }
        Engine::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'json', 'jsonb')",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert!(columns.iter().any(|(t, c)| t == "outbox" && c == "vars"));
            let mut bytes = Vec::new();
            for (table, column) in columns {
                let values: Vec<Option<String>> =
                    sqlx::query_scalar(&format!("SELECT \"{column}\"::text FROM \"{table}\""))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                for v in values.into_iter().flatten() {
                    bytes.extend(v.into_bytes());
                    bytes.push(b'\n');
                }
            }
            bytes
        }
    }
}

/// Sign-up, confirmation and a digest through the running daemon and the
/// `digest send` command, with each key form: every message verifies with
/// dkimpy, and no link token of any delivered message is stored anywhere.
async fn all_mail_is_signed_and_no_link_is_stored(engine: Engine) {
    let mut site = prepare(options(engine));
    let root = site.root.clone();
    let server = SmtpServer::start(&[]);
    std::fs::write(
        root.join("content/old.md"),
        study("Old story", "old", "2025-01-01T00:00:00Z", &["databases"]),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let mut tokens = std::collections::BTreeSet::new();
    let mut record = (String::new(), String::new());
    let mut config = PathBuf::new();
    for (kind, args) in KEY_KINDS {
        let key_file = root.join(format!("{kind}.pem"));
        openssl_key(args, &key_file);
        config = write_config(&mut site, &server, &key_file);
        record = published_record(&ok(&casewire(&config, &["check"])));
        let text = std::fs::read_to_string(&config).unwrap();
        let settings =
            casewire::config::Settings::from_toml(&config, &text, std::iter::empty()).unwrap();
        let app = casewire::app::start(settings).await.expect("app starts");
        let base = format!("http://{}", app.addr);

        let reader = format!("reader-{kind}@example.org");
        let arrived = server.received_count();
        let r = client
            .post(format!("{base}/subscribe"))
            .form(&[("email", reader.as_str()), ("name", "Ada")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            server.wait_for(arrived + 1, std::time::Duration::from_secs(20)),
            "no confirmation arrived"
        );
        let got = server.received_by(&reader);
        assert_eq!(got.len(), 1, "one confirmation for {reader}");
        let mail = &got[0];
        let algorithm = if kind == "ed25519" {
            "ed25519-sha256"
        } else {
            "rsa-sha256"
        };
        assert_signed(mail.as_bytes(), &record.0, &record.1, algorithm);
        assert!(
            mail.contains("Subject: Confirm your subscription"),
            "{mail}"
        );
        let found = link_tokens(mail);
        assert!(!found.is_empty(), "a confirmation link:\n{mail}");
        let confirm = found[0].clone();
        tokens.extend(found);

        let confirmed = client
            .post(format!("{base}/confirm/{confirm}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 200);
        let body: serde_json::Value = confirmed.json().await.unwrap();
        let prefs = body["preferences_url"].as_str().unwrap();
        tokens.insert(prefs.rsplit('/').next().unwrap().to_owned());

        // The welcome and the lost-link mail go through the same composer.
        assert!(
            server.wait_for(arrived + 2, std::time::Duration::from_secs(20)),
            "no welcome arrived"
        );
        let r = client
            .post(format!("{base}/preferences"))
            .form(&[("email", reader.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            server.wait_for(arrived + 3, std::time::Duration::from_secs(20)),
            "no manage-link mail arrived"
        );
        let got = server.received_by(&reader);
        for subject in ["Subject: Welcome to", "Subject: Your link to manage"] {
            let mail = got
                .iter()
                .find(|m| m.contains(subject))
                .unwrap_or_else(|| panic!("no mail with {subject:?} among {got:?}"));
            assert_signed(mail.as_bytes(), &record.0, &record.1, algorithm);
            assert!(mail.contains("Auto-Submitted: auto-generated"), "{mail}");
            let found = link_tokens(mail);
            assert!(!found.is_empty(), "a preferences link:\n{mail}");
            tokens.extend(found);
        }
        app.stop().await;
    }

    std::fs::write(
        root.join("content/new.md"),
        study(
            "Fresh story",
            "fresh",
            "2025-02-01T00:00:00Z",
            &["databases"],
        ),
    )
    .unwrap();
    let before = server.received_count();
    ok(&casewire(&config, &["digest", "send", "weekly"]));
    assert_eq!(server.received_count(), before + 3, "one digest per reader");
    for (kind, _) in KEY_KINDS {
        let got = server.received_by(&format!("reader-{kind}@example.org"));
        let digest = got.last().unwrap();
        assert!(digest.contains("Fresh story"));
        assert_signed(digest.as_bytes(), &record.0, &record.1, "ed25519-sha256");
        let found = link_tokens(digest);
        assert!(
            found.len() >= 3,
            "unsubscribe and preferences links:\n{digest}"
        );
        tokens.extend(found);
    }

    // A preview as a file is signed like the real thing.
    let preview = ok(&casewire(
        &config,
        &[
            "digest",
            "preview",
            "weekly",
            "--format",
            "eml",
            "--subscriber",
            "reader-ed25519@example.org",
        ],
    ));
    assert!(preview.contains("Fresh story"), "{preview}");
    assert_signed(preview.as_bytes(), &record.0, &record.1, "ed25519-sha256");

    // 3 confirmation tokens, and one manage token per reader (the welcome
    // and the lost-link mail carry the same signed manage link).
    assert_eq!(tokens.len(), 6, "{tokens:?}");
    let stored = everything_stored(&site.db, &root).await;
    let present = b"reader-ed25519@example.org";
    assert!(
        stored.windows(present.len()).any(|w| w == present),
        "the scan sees what is stored"
    );
    for t in &tokens {
        assert!(
            !stored.windows(t.len()).any(|w| w == t.as_bytes()),
            "the link token {t} is stored in the database"
        );
    }
    let store = casewire::store::Db::open(&site.db.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no token row per message");
    store.pool.close().await;
}
on_both_engines!(
    all_mail_is_signed_and_no_link_is_stored,
    all_mail_is_signed_and_no_link_is_stored
);

/// `check` warns about a link key other users can read.
#[cfg(unix)]
#[test]
fn check_warns_about_a_readable_link_key() {
    use std::os::unix::fs::PermissionsExt;
    let site = prepare(options(Engine::Sqlite));
    let config = &site.config_path;
    // Beside the SQLite file, as the default link key is.
    let key = site.root.join("casewire.key");
    let out = casewire(&config, &["check"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no link key yet"));
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let quiet = String::from_utf8_lossy(&casewire(&config, &["check"]).stdout).into_owned();
    assert!(!quiet.contains("link key"), "{quiet}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = casewire(&config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}: warning: the link key is readable by other users",
            key.display()
        )),
        "{stdout}"
    );
}
