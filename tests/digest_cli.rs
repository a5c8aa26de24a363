//! The edition commands as an operator runs them: `digest send`, `digest
//! preview`, `schedule` and `status` on the real binary, SQLite and PostgreSQL,
//! with the file transport.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{prepare, study, AppOptions, Engine, BASE_URL};

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

fn mails(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn digest_send_delivers_only_what_is_new(engine: Engine) {
    let site = prepare(AppOptions::new(engine).editions(EDITION));
    let root = site.root.clone();
    std::fs::write(
        root.join("content/old.md"),
        study(
            "Old pool story",
            "old-pool",
            "2025-01-01T00:00:00Z",
            &["databases"],
        ),
    )
    .unwrap();
    let config = site.config_path.clone();
    let outbox = site.outbox_dir.clone();

    // First run on an existing store: the ledger is seeded, nothing is sent.
    ok(&casewire(&config, &["digest", "send", "weekly"]));
    ok(&casewire(
        &config,
        &[
            "subscribers",
            "add",
            "Reader@Example.com",
            "--categories",
            "databases",
            "--editions",
            "weekly",
        ],
    ));
    ok(&casewire(
        &config,
        &[
            "subscribers",
            "add",
            "sec@example.com",
            "--categories",
            "security",
            "--editions",
            "weekly",
        ],
    ));
    std::fs::write(
        root.join("content/new.md"),
        study(
            "Fresh replica lag story",
            "replica-lag",
            "2025-02-01T00:00:00Z",
            &["databases"],
        ),
    )
    .unwrap();

    let out = casewire(&config, &["digest", "send", "weekly"]);
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("weekly: 1 sent"), "{log}");
    let sent = mails(&outbox);
    assert_eq!(sent.len(), 1, "one digest, for the databases reader only");
    let m = &sent[0];
    assert!(m.contains("To: reader@example.com"), "{m}");
    assert!(m.contains("Fresh replica lag story") && !m.contains("Old pool story"));
    assert!(m.contains(&format!("List-Unsubscribe: <{BASE_URL}unsubscribe/")));
    assert!(m.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert!(
        m.contains("?subject=unsubscribe%20"),
        "a mailto unsubscribe too: {m}"
    );
    assert!(m.contains("List-Id: ") && m.contains("<weekly."), "{m}");
    assert!(m.contains("Feedback-ID: weekly:digest:casewire:"), "{m}");
    assert!(!m.contains("%%CASEWIRE_"), "placeholders are filled");

    // Nothing new: no empty digest, nothing twice.
    ok(&casewire(&config, &["digest", "send", "weekly"]));
    assert_eq!(mails(&outbox).len(), 1);

    let status = ok(&casewire(&config, &["status"]));
    assert!(
        status.contains("sent") && status.contains("weekly"),
        "{status}"
    );
    let preview = ok(&casewire(
        &config,
        &["digest", "preview", "weekly", "--format", "eml"],
    ));
    assert!(
        preview.contains("Subject: ") && preview.contains("multipart/alternative"),
        "{preview}"
    );
    let preview = ok(&casewire(
        &config,
        &[
            "digest",
            "preview",
            "weekly",
            "--subscriber",
            "reader@example.com",
            "--format",
            "text",
        ],
    ));
    assert!(
        preview.contains("Fresh replica lag story") || preview.contains("Old pool story"),
        "{preview}"
    );
    let schedule = ok(&casewire(&config, &["schedule"]));
    assert_eq!(
        schedule
            .lines()
            .filter(|l| l.contains("CET") || l.contains("CEST"))
            .count(),
        5,
        "{schedule}"
    );
    assert_eq!(
        casewire(&config, &["digest", "send", "nope"]).status.code(),
        Some(2)
    );
}
on_both_engines!(
    digest_send_delivers_only_what_is_new,
    digest_send_delivers_only_what_is_new
);

/// Issue 13.9: `digest send` exited 0 when nothing was sent because every
/// message failed (here the relay refuses the only recipient, 550 5.1.1).
async fn digest_send_exits_1_when_every_message_failed(engine: Engine) {
    let smtp = support::smtp::SmtpServer::start(&["--reject", "gone@example.com"]);
    let site = prepare(AppOptions::new(engine).editions(EDITION).smtp(&smtp));
    assert!(
        site.config_text.contains("smtp_url"),
        "{}",
        site.config_text
    );
    let root = site.root.clone();
    std::fs::write(
        root.join("content/old.md"),
        study(
            "Old story",
            "old-story",
            "2025-01-01T00:00:00Z",
            &["databases"],
        ),
    )
    .unwrap();
    let config = site.config_path.clone();
    ok(&casewire(&config, &["digest", "send", "weekly"]));
    subscribe_and_publish(&config, &root, "gone@example.com");
    let out = casewire(&config, &["digest", "send", "weekly"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(smtp.received_count(), 0);
}
on_both_engines!(
    digest_send_exits_1_when_every_message_failed,
    digest_send_exits_1_when_every_message_failed
);

/// Adds `email` to the weekly edition, then publishes a new case study for
/// its next run.
fn subscribe_and_publish(config: &Path, root: &Path, email: &str) {
    ok(&casewire(
        config,
        &["subscribers", "add", email, "--editions", "weekly"],
    ));
    std::fs::write(
        root.join("content/new.md"),
        study(
            "New story",
            "new-story",
            "2025-02-01T00:00:00Z",
            &["databases"],
        ),
    )
    .unwrap();
}

/// [`casewire`], failing the test (and killing the command) when it is
/// still running after a minute: a send that waits for rows nobody will
/// queue never ends by itself.
fn within_a_minute(config: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("casewire {args:?} still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// When the edition run itself fails (here a digest template naming a
/// value no digest has, under strict undefined), `digest send` ends with
/// the error instead of waiting for rows that will never come: on SQLite
/// the run queues on a thread of its own, and the delivery side learns
/// that it stopped only from that thread.
async fn digest_send_reports_a_failed_edition_run_and_ends(engine: Engine) {
    let site = prepare(
        AppOptions::new(engine)
            .editions(EDITION)
            .templates("dir = \"{root}/templates\""),
    );
    let root = site.root.clone();
    let config = site.config_path.clone();
    std::fs::write(
        root.join("content/old.md"),
        study(
            "Old story",
            "old-story",
            "2025-01-01T00:00:00Z",
            &["databases"],
        ),
    )
    .unwrap();
    ok(&within_a_minute(&config, &["digest", "send", "weekly"]));
    subscribe_and_publish(&config, &root, "reader@example.com");
    let email = root.join("templates/email");
    std::fs::create_dir_all(&email).unwrap();
    std::fs::write(
        email.join("digest.html"),
        "<p>{{ no_such_value_in_a_digest }}</p>\n",
    )
    .unwrap();

    let out = within_a_minute(&config, &["digest", "send", "weekly"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rendering the weekly digest"), "{stderr}");
    assert!(stderr.contains("email/digest.html"), "{stderr}");
    // Nothing of the new story went out: it was never rendered.
    assert!(!mails(&site.outbox_dir)
        .iter()
        .any(|m| m.contains("New story")));
}
on_both_engines!(
    digest_send_reports_a_failed_edition_run_and_ends,
    digest_send_reports_a_failed_edition_run_and_ends
);
