//! `[bounces]`: where bounces and complaints come back from (a bounce
//! mailbox over IMAP, ESP webhooks) and the policy that acts on them.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBounces {
    imap_url: Option<String>,
    done_folder: Option<String>,
    poll_seconds: Option<u64>,
    return_path: Option<String>,
    soft_limit: Option<u32>,
    soft_window_days: Option<u32>,
    complaint_rate_warn: Option<f64>,
    bounce_rate_warn: Option<f64>,
    #[serde(default)]
    webhooks: RawWebhooks,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    ses: Option<RawSes>,
    postmark: Option<RawPostmark>,
    sendgrid: Option<RawSendgrid>,
    mailgun: Option<RawMailgun>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawSes {
    topic_arn: Option<String>,
    cert_hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawPostmark {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawSendgrid {
    public_key: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawMailgun {
    signing_key: String,
}

/// `[[editions]] pause_above`: a run whose rates pass these pauses its
/// edition until `casewire digest resume`, once it sent `min_sent` messages
/// (default 100; fewer say little).
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PauseAbove {
    pub complaint_rate: Option<f64>,
    pub bounce_rate: Option<f64>,
    #[serde(default = "default_min_sent")]
    pub min_sent: i64,
}

fn default_min_sent() -> i64 {
    100
}

/// Validated `[bounces]`.
#[derive(Debug, Clone)]
pub struct BounceSettings {
    /// `imaps://user:pass@host/INBOX` (or `imap://`, STARTTLS when offered);
    /// none: no bounce mailbox is read.
    pub imap_url: Option<url::Url>,
    /// Where processed messages are moved (default "casewire-done").
    pub done_folder: String,
    /// How often the mailbox is checked when the server has no IDLE (default 60 s).
    pub poll_interval: Duration,
    /// `bounces@example.org`: envelope senders become
    /// `bounces+<signed id>@example.org` (VERP). Default: `mail.bounce_domain`.
    pub return_path: Option<String>,
    /// Soft bounces (4.x.x) within `soft_window` that suppress (default 3 in 30 days).
    pub soft_limit: u32,
    pub soft_window: Duration,
    /// `status` and the log warn above these rates (defaults 0.1% and 2%).
    pub complaint_rate_warn: f64,
    pub bounce_rate_warn: f64,
    pub ses: Option<SesSettings>,
    pub postmark: Option<PostmarkSettings>,
    pub sendgrid: Option<SendgridSettings>,
    pub mailgun: Option<MailgunSettings>,
}

#[derive(Debug, Clone)]
pub struct SesSettings {
    /// Only notifications of this SNS topic are accepted, when set.
    pub topic_arn: Option<String>,
    /// Hosts a signing certificate may be fetched from: exact names, or
    /// `*.` followed by a suffix. Default: SNS's own, `sns.<region>.amazonaws.com`.
    pub cert_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PostmarkSettings {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct SendgridSettings {
    /// The verification key from SendGrid's Signed Event Webhook settings
    /// (base64 of a DER SubjectPublicKeyInfo, ECDSA P-256).
    pub public_key: p256::ecdsa::VerifyingKey,
}

#[derive(Debug, Clone)]
pub struct MailgunSettings {
    pub signing_key: String,
}

/// The default SNS certificate hosts: `sns.<region>.amazonaws.com` (and the
/// China partition's `.com.cn`).
pub const SNS_CERT_HOSTS: [&str; 2] = ["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"];

impl RawBounces {
    /// Checks every key; each problem is `(key, message)`.
    pub(crate) fn validate(self, problems: &mut Vec<(String, String)>) -> BounceSettings {
        let mut push =
            |key: &str, message: String| problems.push((format!("[bounces] {key}"), message));
        let imap_url = self
            .imap_url
            .filter(|u| !u.is_empty())
            .and_then(|u| match url::Url::parse(&u) {
                Ok(url) if matches!(url.scheme(), "imap" | "imaps") && url.host().is_some() => {
                    Some(url)
                }
                Ok(_) => {
                    push(
                        "imap_url",
                        format!(
                            "{:?} must be imap://… or imaps://user:pass@host/MAILBOX",
                            crate::config::redact(&u)
                        ),
                    );
                    None
                }
                Err(e) => {
                    push("imap_url", format!("{:?}: {e}", crate::config::redact(&u)));
                    None
                }
            });
        let poll = self.poll_seconds.unwrap_or(60);
        if !(1..=86_400).contains(&poll) {
            push(
                "poll_seconds",
                format!("{poll} is out of range (1 to 86400)"),
            );
        }
        if let Some(rp) = &self.return_path {
            if crate::domain::EmailAddress::parse(rp).is_err() || rp.contains('+') {
                push(
                    "return_path",
                    format!("{rp:?} must be a plain address such as bounces@example.org"),
                );
            }
        }
        let soft_limit = self.soft_limit.unwrap_or(3);
        if soft_limit == 0 {
            push("soft_limit", "must be at least 1".into());
        }
        let soft_days = self.soft_window_days.unwrap_or(30);
        if soft_days == 0 {
            push("soft_window_days", "must be at least 1".into());
        }
        let rate = |key: &str, v: Option<f64>, default: f64, push: &mut dyn FnMut(&str, String)| {
            let v = v.unwrap_or(default);
            if !(0.0..=1.0).contains(&v) {
                push(
                    key,
                    format!("{v} must be a fraction between 0 and 1 (0.001 is 0.1%)"),
                );
            }
            v
        };
        let complaint_rate_warn = rate(
            "complaint_rate_warn",
            self.complaint_rate_warn,
            0.001,
            &mut push,
        );
        let bounce_rate_warn = rate("bounce_rate_warn", self.bounce_rate_warn, 0.02, &mut push);
        let w = self.webhooks;
        let sendgrid = w.sendgrid.and_then(|s| match sendgrid_key(&s.public_key) {
            Ok(public_key) => Some(SendgridSettings { public_key }),
            Err(e) => {
                push("webhooks.sendgrid.public_key", e);
                None
            }
        });
        let postmark = w.postmark.and_then(|p| {
            if p.username.is_empty() || p.password.len() < 12 {
                push(
                    "webhooks.postmark",
                    "username must be set and password must have 12 or more characters".into(),
                );
                return None;
            }
            Some(PostmarkSettings {
                username: p.username,
                password: p.password,
            })
        });
        let mailgun = w.mailgun.and_then(|m| {
            if m.signing_key.len() < 16 {
                push(
                    "webhooks.mailgun.signing_key",
                    "is too short (Mailgun's HTTP webhook signing key, from its dashboard)".into(),
                );
                return None;
            }
            Some(MailgunSettings {
                signing_key: m.signing_key,
            })
        });
        let ses = w.ses.map(|s| SesSettings {
            topic_arn: s.topic_arn.filter(|t| !t.is_empty()),
            cert_hosts: s
                .cert_hosts
                .unwrap_or_else(|| SNS_CERT_HOSTS.iter().map(|h| h.to_string()).collect()),
        });
        BounceSettings {
            imap_url,
            done_folder: self.done_folder.unwrap_or_else(|| "casewire-done".into()),
            poll_interval: Duration::from_secs(poll),
            return_path: self.return_path,
            soft_limit: soft_limit.max(1),
            soft_window: Duration::from_secs(u64::from(soft_days.max(1)) * 86_400),
            complaint_rate_warn,
            bounce_rate_warn,
            ses,
            postmark,
            sendgrid,
            mailgun,
        }
    }
}

fn sendgrid_key(text: &str) -> Result<p256::ecdsa::VerifyingKey, String> {
    use base64::Engine as _;
    use p256::pkcs8::DecodePublicKey as _;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("not base64: {e}"))?;
    p256::ecdsa::VerifyingKey::from_public_key_der(&der)
        .map_err(|e| format!("not an ECDSA P-256 public key: {e}"))
}

impl Default for BounceSettings {
    fn default() -> Self {
        RawBounces::default().validate(&mut Vec::new())
    }
}

/// Whether `host` is allowed by `patterns` (exact names, or `sns.*.suffix`
/// style with one `*` standing for one DNS label).
pub fn host_allowed(host: &str, patterns: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        match p.split_once('*') {
            None => p == host,
            Some((prefix, suffix)) => {
                host.len() > prefix.len() + suffix.len()
                    && host.starts_with(prefix)
                    && host.ends_with(suffix)
                    && {
                        let label = &host[prefix.len()..host.len() - suffix.len()];
                        !label.is_empty()
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_certificate_hosts_are_matched_label_by_label() {
        let p: Vec<String> = SNS_CERT_HOSTS.iter().map(|h| h.to_string()).collect();
        assert!(host_allowed("sns.eu-west-1.amazonaws.com", &p));
        assert!(host_allowed("SNS.us-east-1.amazonaws.com", &p));
        assert!(!host_allowed("sns.evil.example.com", &p));
        assert!(!host_allowed("sns.a.b.amazonaws.com", &p));
        assert!(!host_allowed("sns..amazonaws.com", &p));
        assert!(!host_allowed("evil-amazonaws.com", &p));
        assert!(host_allowed("127.0.0.1", &["127.0.0.1".to_string()]));
    }
}
