//! DKIM checking for tests: keys made by `openssl`, the TXT record that
//! `casewire check` prints, and dkimpy (an independent implementation)
//! verifying a captured message with that record as its only DNS answer.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The key forms casewire accepts, and the openssl command that makes each.
pub const KEY_KINDS: [(&str, &[&str]); 3] = [
    ("rsa-pkcs1", &["genrsa", "-traditional", "2048"]),
    ("rsa-pkcs8", &["genrsa", "2048"]),
    ("ed25519", &["genpkey", "-algorithm", "ed25519"]),
];

/// Writes a new private key with `openssl ARGS` to `path`.
pub fn openssl_key(args: &[&str], path: &Path) {
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
pub fn published_record(check_stdout: &str) -> (String, String) {
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
