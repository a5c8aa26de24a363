//! Reading what comes back to the bounce mailbox: delivery status
//! notifications (RFC 3464 `message/delivery-status`), abuse feedback
//! reports (RFC 5965 `message/feedback-report`), the plain-text bounces some
//! providers still send (Exchange, Yahoo, qmail's "failure notice"), and
//! auto-replies, which are recognised and ignored. MIME is parsed by
//! mail-parser; only the report fields are read here.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// One failed recipient of a delivery status notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `Final-Recipient` (or `Original-Recipient`), or the address a
    /// plain-text bounce names.
    pub recipient: Option<String>,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: Option<String>,
    /// `Diagnostic-Code`, without its type prefix.
    pub diagnostic: String,
}

/// What a message in the bounce mailbox is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Permanent or temporary failures, one per recipient.
    Bounce(Vec<Failure>),
    /// An abuse report: the reader marked a message as spam.
    Complaint {
        /// `Original-Rcpt-To`, or the To of the attached original message.
        recipient: Option<String>,
        feedback_type: String,
    },
    /// A vacation or out-of-office reply, or a delay warning: nothing to do.
    Ignored(&'static str),
    /// Not understood: the message stays in the mailbox and is reported.
    Unknown(String),
}

/// A parsed message and what ties it to the mail we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: Kind,
    /// The report's own Message-ID (identifies it when seen twice).
    pub message_id: Option<String>,
    /// The Message-ID of the message that bounced, from the attached
    /// original or its headers.
    pub original_message_id: Option<String>,
    /// Addresses the report was sent to (`To`, `Delivered-To`,
    /// `X-Original-To`), where a VERP envelope sender comes back, and the
    /// feedback report's `Original-Mail-From`.
    pub returned_to: Vec<String>,
}

/// Parses one raw message.
pub fn parse(raw: &[u8]) -> Report {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Report {
            kind: Kind::Unknown("not a mail message (no headers)".into()),
            message_id: None,
            original_message_id: None,
            returned_to: Vec::new(),
        };
    };
    let mut returned_to: Vec<String> = ["To", "Delivered-To", "X-Original-To", "Envelope-To"]
        .iter()
        .flat_map(|h| message.header_values(*h))
        .filter_map(|v| v.as_text().map(str::to_owned).or_else(|| address_text(v)))
        .flat_map(|v| addresses_in(&v))
        .collect();
    let mut original_message_id = None;
    let mut status_fields = None;
    let mut feedback_fields = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let ctype = ct.ctype().to_ascii_lowercase();
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        match (ctype.as_str(), sub.as_str()) {
            ("message", "delivery-status") | ("message", "global-delivery-status") => {
                status_fields = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
            ("message", "feedback-report") => {
                feedback_fields = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
            ("text", "rfc822-headers") | ("message", "rfc822-headers") => {
                let headers = String::from_utf8_lossy(part.contents());
                original_message_id =
                    original_message_id.or_else(|| field(&headers, "message-id").map(clean_id));
            }
            ("message", "rfc822") | ("message", "global") => {
                if let PartType::Message(inner) = &part.body {
                    original_message_id =
                        original_message_id.or_else(|| inner.message_id().map(str::to_owned));
                    if feedback_fields.is_some() || original_message_id.is_some() {
                        returned_to.extend(inner_recipients(inner));
                    }
                }
            }
            _ => {}
        }
    }
    let message_id = message.message_id().map(str::to_owned);
    if let Some(fields) = feedback_fields {
        let blocks = blocks(&fields);
        let first = blocks.first().cloned().unwrap_or_default();
        let get = |name: &str| {
            first
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(from) = get("original-mail-from") {
            returned_to.extend(addresses_in(&from));
        }
        let recipient = get("original-rcpt-to")
            .and_then(|v| addresses_in(&v).into_iter().next())
            .or_else(|| {
                message.parts.iter().find_map(|p| match &p.body {
                    PartType::Message(inner) => inner_recipients(inner).into_iter().next(),
                    _ => None,
                })
            });
        return Report {
            kind: Kind::Complaint {
                recipient,
                feedback_type: get("feedback-type").unwrap_or_else(|| "abuse".into()),
            },
            message_id,
            original_message_id,
            returned_to,
        };
    }
    if let Some(fields) = status_fields {
        let mut failures = Vec::new();
        let mut delayed = false;
        // The first block is about the message; each later one a recipient.
        for block in blocks(&fields).into_iter().skip(1) {
            let get = |name: &str| {
                block
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let action = get("action").unwrap_or_default().to_ascii_lowercase();
            match action.split_whitespace().next().unwrap_or("") {
                "failed" => {}
                "delayed" => {
                    delayed = true;
                    continue;
                }
                // delivered, relayed, expanded: not failures.
                _ => continue,
            }
            let recipient = get("final-recipient")
                .or_else(|| get("original-recipient"))
                .and_then(|v| addresses_in(typed_value(&v)).into_iter().next());
            let diagnostic = get("diagnostic-code")
                .map(|d| typed_value(&d).to_owned())
                .unwrap_or_default();
            let status = get("status")
                .and_then(|s| status_code(&s))
                .or_else(|| status_code(&diagnostic));
            failures.push(Failure {
                recipient,
                status,
                diagnostic,
            });
        }
        let kind = if !failures.is_empty() {
            Kind::Bounce(failures)
        } else if delayed {
            Kind::Ignored("a delay warning: the relay is still trying")
        } else {
            Kind::Ignored("a delivery report without failures")
        };
        return Report {
            kind,
            message_id,
            original_message_id,
            returned_to,
        };
    }
    let kind = if is_auto_reply(&message) {
        Kind::Ignored("an automatic reply (vacation, out of office)")
    } else {
        plain_text_bounce(&message)
    };
    Report {
        kind,
        message_id,
        original_message_id,
        returned_to,
    }
}

fn address_text(v: &mail_parser::HeaderValue<'_>) -> Option<String> {
    v.as_address().map(|a| {
        a.iter()
            .filter_map(|x| x.address().map(str::to_owned))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn inner_recipients(inner: &Message<'_>) -> Vec<String> {
    inner
        .to()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(|s| s.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default()
}

fn clean_id(v: String) -> String {
    v.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// `rfc822; user@example.org` → `user@example.org`; `smtp; 550 …` → `550 …`.
fn typed_value(v: &str) -> &str {
    match v.split_once(';') {
        Some((kind, rest)) if !kind.contains(' ') && kind.len() < 16 => rest.trim(),
        _ => v.trim(),
    }
}

/// Header-style blocks separated by blank lines, with folded lines joined
/// and names lower-cased.
fn blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut block: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                out.push(std::mem::take(&mut block));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = block.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            block.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    if !block.is_empty() {
        out.push(block);
    }
    out
}

/// The value of header `name` in a block of headers.
fn field(headers: &str, name: &str) -> Option<String> {
    blocks(headers)
        .into_iter()
        .next()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The first RFC 3463 code (`class.subject.detail`, class 2, 4 or 5) in `text`.
pub fn status_code(text: &str) -> Option<String> {
    let b = text.as_bytes();
    for start in 0..b.len() {
        if !matches!(b[start], b'2' | b'4' | b'5')
            || (start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'.'))
        {
            continue;
        }
        let mut i = start + 1;
        let mut parts = 1;
        while parts < 3 {
            if i >= b.len() || b[i] != b'.' {
                break;
            }
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 3 {
                break;
            }
            i += 1 + digits;
            parts += 1;
        }
        let ends_clean = i >= b.len() || !(b[i].is_ascii_alphanumeric() || b[i] == b'.');
        if parts == 3 && ends_clean {
            return Some(text[start..i].to_owned());
        }
    }
    None
}

/// Every address-shaped word in `text`, lower-cased.
fn addresses_in(text: &str) -> Vec<String> {
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | ',' | ';' | '"' | '(' | ')' | '[' | ']' | '\''
            )
    })
    .map(|w| w.trim_end_matches([':', '.']))
    .filter(|w| {
        w.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
    })
    .map(str::to_ascii_lowercase)
    .collect()
}

fn is_auto_reply(m: &Message<'_>) -> bool {
    let header = |name: &str| m.header_raw(name).map(|v| v.trim().to_ascii_lowercase());
    if header("auto-submitted").is_some_and(|v| v.starts_with("auto-replied")) {
        return true;
    }
    if header("x-autoreply").is_some() || header("x-autorespond").is_some() {
        return true;
    }
    if header("precedence").is_some_and(|v| v == "auto_reply") {
        return true;
    }
    let subject = m.subject().unwrap_or("").to_ascii_lowercase();
    [
        "out of office",
        "automatic reply",
        "auto:",
        "autoreply",
        "vacation",
    ]
    .iter()
    .any(|p| subject.starts_with(p) || subject.contains(&format!(" {p}")))
}

/// The bounces that are plain text: from a mailer daemon, with a subject
/// that says so, naming the failed addresses in the text.
fn plain_text_bounce(m: &Message<'_>) -> Kind {
    let from = m
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_ascii_lowercase();
    let subject = m.subject().unwrap_or("").to_ascii_lowercase();
    let daemon = [
        "mailer-daemon",
        "postmaster",
        "mail delivery",
        "mailer_daemon",
    ]
    .iter()
    .any(|d| from.contains(d));
    let says_bounce = [
        "undeliverable",
        "undelivered",
        "delivery status notification",
        "failure notice",
        "delivery failure",
        "mail delivery failed",
        "returned mail",
        "delivery has failed",
    ]
    .iter()
    .any(|s| subject.contains(s));
    if !(daemon && says_bounce) {
        return Kind::Unknown(format!(
            "neither a delivery report nor a feedback report (from {from:?}, subject {:?})",
            m.subject().unwrap_or("")
        ));
    }
    let text: String = (0..m.text_body.len())
        .filter_map(|i| m.body_text(i))
        .collect::<Vec<_>>()
        .join("\n");
    // The addresses named before the quoted original, which are the failed
    // recipients; the sender's own addresses are not.
    let body = [
        "-----",
        "Original message",
        "original message",
        "Below this line",
        "copy of the message",
    ]
    .iter()
    .fold(text.as_str(), |body, marker| {
        body.split(marker).next().unwrap_or(body)
    });
    let mut recipients: Vec<String> = addresses_in(body)
        .into_iter()
        .filter(|a| !a.starts_with("mailer-daemon@") && !a.starts_with("postmaster@") && *a != from)
        .collect();
    recipients.dedup();
    if recipients.is_empty() {
        return Kind::Unknown("a bounce that names no recipient".into());
    }
    let status = status_code(body).or_else(|| {
        // "554: delivery error", "550 User unknown": the reply code alone.
        body.split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 3 && (w.starts_with('5') || w.starts_with('4')))
            .map(|w| format!("{}.0.0", &w[..1]))
    });
    let diagnostic = body
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("5") || l.starts_with("4") || l.contains("Remote Server returned"))
        .unwrap_or("")
        .chars()
        .take(300)
        .collect::<String>();
    Kind::Bounce(
        recipients
            .into_iter()
            .map(|r| Failure {
                recipient: Some(r),
                status: status.clone(),
                diagnostic: diagnostic.clone(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bounces")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn status_codes_are_found_in_text() {
        assert_eq!(
            status_code("smtp; 550 5.1.1 <a@b>: user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(status_code("4.2.2").as_deref(), Some("4.2.2"));
        assert_eq!(status_code("version 5.1.12a"), None);
        assert_eq!(status_code("ip 10.5.1.1"), None);
        assert_eq!(status_code("nothing here"), None);
    }

    #[test]
    fn a_postfix_dsn_names_the_failed_recipient_and_the_original() {
        let r = parse(&fixture("postfix-dsn.eml"));
        let Kind::Bounce(f) = &r.kind else {
            panic!("{r:?}")
        };
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].recipient.as_deref(), Some("gone@example.net"));
        assert_eq!(f[0].status.as_deref(), Some("5.1.1"));
        assert!(f[0].diagnostic.contains("User unknown"), "{:?}", f[0]);
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("digest.42.abc@casewire.example")
        );
        assert!(
            r.returned_to.iter().any(|a| a.starts_with("bounces+42-")),
            "{:?}",
            r.returned_to
        );
    }

    #[test]
    fn a_full_mailbox_is_a_soft_failure_and_a_delay_is_ignored() {
        let r = parse(&fixture("mailbox-full-dsn.eml"));
        let Kind::Bounce(f) = &r.kind else {
            panic!("{r:?}")
        };
        assert_eq!(f[0].status.as_deref(), Some("4.2.2"));
        let r = parse(&fixture("delayed-dsn.eml"));
        assert!(matches!(r.kind, Kind::Ignored(_)), "{r:?}");
    }

    #[test]
    fn an_arf_report_is_a_complaint_about_the_original_recipient() {
        let r = parse(&fixture("arf-abuse.eml"));
        assert_eq!(
            r.kind,
            Kind::Complaint {
                recipient: Some("reader@example.com".into()),
                feedback_type: "abuse".into()
            }
        );
        assert!(
            r.returned_to.iter().any(|a| a.starts_with("bounces+7-")),
            "{:?}",
            r.returned_to
        );
    }

    #[test]
    fn plain_text_bounces_of_exchange_and_yahoo_are_read() {
        let r = parse(&fixture("exchange-ndr.eml"));
        let Kind::Bounce(f) = &r.kind else {
            panic!("{r:?}")
        };
        assert_eq!(f[0].recipient.as_deref(), Some("left.company@example.org"));
        assert_eq!(f[0].status.as_deref(), Some("5.1.1"));
        let r = parse(&fixture("yahoo-failure-notice.eml"));
        let Kind::Bounce(f) = &r.kind else {
            panic!("{r:?}")
        };
        assert_eq!(
            f[0].recipient.as_deref(),
            Some("no-such-user@yahoo.example")
        );
        assert_eq!(f[0].status.as_deref(), Some("5.0.0"));
    }

    #[test]
    fn auto_replies_are_ignored_and_anything_else_is_unknown() {
        assert!(matches!(
            parse(&fixture("out-of-office.eml")).kind,
            Kind::Ignored(_)
        ));
        assert!(matches!(
            parse(&fixture("human-reply.eml")).kind,
            Kind::Unknown(_)
        ));
        assert!(matches!(parse(b"").kind, Kind::Unknown(_)));
    }
}
