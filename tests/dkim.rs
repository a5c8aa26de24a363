//! DKIM as a receiver checks it: keys made by `openssl` in the three forms
//! operators have (RSA PKCS#1, RSA PKCS#8 as `openssl genrsa` writes today,
//! Ed25519), the TXT record `casewire check` prints as the only DNS answer,
//! mail captured by a real SMTP server (aiosmtpd), and dkimpy, an
//! independent implementation, verifying each message. SQLite and PostgreSQL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::daemon::{config_text, study};
use common::smtp::SmtpServer;
use common::{Engine, TestDb};

const EDITION: &str = r#"
[[editions]]
slug = "weekly"
name = "Weekly"
schedule = "0 8 * * MON"
timezone = "Europe/Berlin"
"#;

/// The key forms casewire accepts, and the openssl command that makes each.
pub const KEY_KINDS: [(&str, &[&str]); 3] = [
    ("rsa-pkcs1", &["genrsa", "-traditional", "2048"]),
    ("rsa-pkcs8", &["genrsa", "2048"]),
    ("ed25519", &["genpkey", "-algorithm", "ed25519"]),
];

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

/// Writes a new private key with `openssl ARGS` to `path`.
fn openssl_key(args: &[&str], path: &Path) {
    let out = Command::new("openssl")
        .arg(args[0])
        .arg("-out")
        .arg(path)
        .args(&args[1..])
        .output()
        .expect("the openssl command is required to make test keys: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The DNS record `casewire check` printed: (name, joined TXT value).
fn published_record(check_stdout: &str) -> (String, String) {
    let line = check_stdout
        .lines()
        .find(|l| l.contains("._domainkey.") && l.contains(" TXT "))
        .unwrap_or_else(|| panic!("check printed no TXT record:\n{check_stdout}"));
    let (name, quoted) = line.split_once(" TXT ").unwrap();
    let value: String = quoted
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    (name.trim().to_owned(), value)
}

/// Verifies `message` with dkimpy, answering its one DNS query with
/// `record`; returns dkimpy's verdict and log.
pub fn dkimpy_verify(message: &[u8], name: &str, record: &str) -> (bool, String) {
    let check = Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .output()
        .expect("python3 is required for the DKIM tests");
    assert!(
        check.status.success(),
        "the DKIM tests need dkimpy and PyNaCl: pip install dkimpy pynacl ({})",
        String::from_utf8_lossy(&check.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    // The recorder's first line is its own note of the envelope sender.
    let message = match message.strip_prefix(b"X-Envelope-From:") {
        Some(rest) => &rest[rest.windows(2).position(|w| w == b"\r\n").unwrap() + 2..],
        None => message,
    };
    std::fs::write(&file, message).unwrap();
    let script = r#"
import logging, sys, dkim
logging.basicConfig(stream=sys.stdout, level=logging.DEBUG)
msg = open(sys.argv[1], "rb").read()
name, record = sys.argv[2].encode(), sys.argv[3].encode()
def dns(qname, timeout=5):
    return record if qname.rstrip(b".") == name else None
ok = dkim.DKIM(msg, logger=logging.getLogger("dkim")).verify(dnsfunc=dns)
print("VERIFIED" if ok else "FAILED")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .arg(name)
        .arg(record)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (log.contains("VERIFIED"), log)
}

/// Unfolds the header block of `message` and returns the value of `name`.
pub fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next().unwrap();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Asserts that `message` verifies and that its signature covers the list headers.
pub fn assert_signed(message: &[u8], name: &str, record: &str, algorithm: &str) {
    let (verified, log) = dkimpy_verify(message, name, record);
    let text = String::from_utf8_lossy(message);
    assert!(verified, "dkimpy does not verify:\n{log}\n{text}");
    let sig = header(&text, "DKIM-Signature").expect("a DKIM-Signature header");
    let tags: std::collections::HashMap<&str, &str> = sig
        .split(';')
        .filter_map(|t| t.trim().split_once('='))
        .collect();
    assert_eq!(tags["a"].trim(), algorithm, "{sig}");
    let signed: Vec<String> = tags["h"]
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in ["from", "to", "subject", "date", "message-id"] {
        assert!(signed.iter().any(|s| s == h), "h= lacks {h}: {signed:?}");
    }
    if text.contains("\r\nList-Unsubscribe:") {
        for h in ["list-unsubscribe", "list-unsubscribe-post"] {
            assert!(signed.iter().any(|s| s == h), "h= lacks {h}: {signed:?}");
        }
    }
}

fn key_config(server: &SmtpServer, key_file: &Path) -> String {
    format!(
        "transport = \"smtp\"\nsmtp_url = \"{}\"\ntimeout_seconds = 10\ndkim = {{ selector = \"cw1\", domain = \"notes.example.com\", key_file = \"{}\" }}\n",
        server.url(),
        key_file.display()
    )
}

/// The config file of `root`, sending through `server` and signing with `key_file`.
fn write_config(db: &TestDb, root: &Path, server: &SmtpServer, key_file: &Path) -> PathBuf {
    let text = config_text(&db.url, root, EDITION).replace(
        &format!(
            "transport = \"file\"\nfile_dir = \"{}\"\n",
            root.join("outbox").display()
        ),
        &key_config(server, key_file),
    );
    assert!(text.contains("dkim = "), "the mail section was replaced");
    let config = root.join("casewire.toml");
    std::fs::write(&config, text).unwrap();
    config
}

async fn digests_verify_with_every_key_form(engine: Engine) {
    let db = TestDb::new(engine).await;
    let root = db.path();
    let server = SmtpServer::start(&[]);
    std::fs::create_dir_all(root.join("content")).unwrap();
    for (n, (kind, args)) in KEY_KINDS.iter().enumerate() {
        let key_file = root.join(format!("{kind}.pem"));
        openssl_key(args, &key_file);
        let config = write_config(&db, &root, &server, &key_file);
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
    let root = tempfile::tempdir().unwrap();
    let key_file = root.path().join("dsa.pem");
    std::fs::write(
        &key_file,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let url = format!("sqlite://{}", root.path().join("x.db").display());
    let text = config_text(&url, root.path(), EDITION).replace(
        "transport = \"file\"",
        &format!(
            "dkim = {{ selector = \"cw1\", domain = \"notes.example.com\", key_file = \"{}\" }}\ntransport = \"file\"",
            key_file.display()
        ),
    );
    std::fs::create_dir_all(root.path().join("content")).unwrap();
    let config = root.path().join("casewire.toml");
    std::fs::write(&config, text).unwrap();
    let out = casewire(&config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("[mail] dkim key_file {}:", key_file.display()))
            && stdout.contains("not a private key"),
        "{stdout}"
    );
}
