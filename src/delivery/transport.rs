//! The configured way out: an SMTP connection pool (lettre, STARTTLS when
//! offered on `smtp://`, implicit TLS on `smtps://`) or a folder of `.eml`
//! files. Every send is bounded by `mail.timeout`, and every failure is
//! classified as permanent (never retry, suppress) or transient (retry later).

use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSettings, Transport};

/// Headers a DKIM signature covers. List-Unsubscribe and its one-click
/// companion are signed because mailbox providers only honour one-click
/// unsubscribe (RFC 8058) when both are covered by a valid signature.
pub const DKIM_SIGNED_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later: 4xx replies, connection trouble, timeouts.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The server refused for good (5xx): the address is suppressed.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("[mail] smtp_url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("[mail] file_dir {dir}: cannot create the folder: {source}")]
    FileDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("[mail] dkim key_file {file}: {message}")]
    DkimKey {
        file: std::path::PathBuf,
        message: String,
    },
    #[error("[mail] smtp_url: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

enum Inner {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// A transport built from `[mail]`. Cheap to share behind an `Arc`.
pub struct Mailer {
    inner: Inner,
    timeout: Duration,
    dkim: Option<DkimConfig>,
}

impl Mailer {
    pub fn from_settings(mail: &MailSettings) -> Result<Arc<Self>, TransportError> {
        let inner = match mail.transport {
            Transport::File => {
                std::fs::create_dir_all(&mail.file_dir).map_err(|source| {
                    TransportError::FileDir {
                        dir: mail.file_dir.clone(),
                        source,
                    }
                })?;
                Inner::File(AsyncFileTransport::new(&mail.file_dir))
            }
            Transport::Smtp => Inner::Smtp(smtp_transport(mail)?),
        };
        let dkim = match &mail.dkim {
            None => None,
            Some(d) => {
                let err = |message: String| TransportError::DkimKey {
                    file: d.key_file.clone(),
                    message,
                };
                let pem = std::fs::read_to_string(&d.key_file)
                    .map_err(|e| err(format!("cannot read: {e}")))?;
                let key = DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa).map_err(|e| {
                    err(format!(
                        "not an RSA private key in PKCS#1 PEM ({e}); convert with `openssl rsa -traditional -in KEY -out KEY.pem`"
                    ))
                })?;
                Some(DkimConfig::new(
                    d.selector.clone(),
                    d.domain.clone(),
                    key,
                    DKIM_SIGNED_HEADERS
                        .iter()
                        .map(|h| HeaderName::new_from_ascii_str(h))
                        .collect(),
                    DkimCanonicalization {
                        header: DkimCanonicalizationType::Relaxed,
                        body: DkimCanonicalizationType::Relaxed,
                    },
                ))
            }
        };
        Ok(Arc::new(Self {
            inner,
            timeout: mail.timeout,
            dkim,
        }))
    }

    /// Adds a DKIM-Signature when `[mail] dkim` is configured.
    pub fn sign(&self, message: &mut Message) {
        if let Some(config) = &self.dkim {
            message.sign(config);
        }
    }

    /// Sends finished message bytes, within `mail.timeout`.
    pub async fn send_raw(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(), DeliveryError> {
        let attempt =
            async {
                match &self.inner {
                    Inner::Smtp(t) => t
                        .send_raw(envelope, bytes)
                        .await
                        .map(|_| ())
                        .map_err(classify),
                    Inner::File(t) => t.send_raw(envelope, bytes).await.map(|_| ()).map_err(|e| {
                        DeliveryError::Transient(format!("writing the .eml file: {e}"))
                    }),
                }
            };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(DeliveryError::Transient(format!(
                "no answer within {} s ([mail] timeout_seconds)",
                self.timeout.as_secs()
            ))),
        }
    }

    /// Closes pooled connections.
    pub async fn shutdown(&self) {
        if let Inner::Smtp(t) = &self.inner {
            t.shutdown().await;
        }
    }
}

/// 5xx replies are permanent; 4xx, connection errors and timeouts are transient.
pub fn classify(e: lettre::transport::smtp::Error) -> DeliveryError {
    if e.is_permanent() {
        DeliveryError::Permanent(e.to_string())
    } else {
        DeliveryError::Transient(e.to_string())
    }
}

fn smtp_transport(
    mail: &MailSettings,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, TransportError> {
    let url_err = |message: &str| TransportError::Url {
        url: crate::config::redact(&mail.smtp_url),
        message: message.to_owned(),
    };
    let url = url::Url::parse(&mail.smtp_url).map_err(|e| url_err(&e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| url_err("has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let implicit_tls = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        _ => return Err(url_err("expected smtp:// or smtps://")),
    };
    let port = url.port().unwrap_or(if implicit_tls { 465 } else { 25 });
    let tls = TlsParameters::new(host.clone())?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(if implicit_tls {
            Tls::Wrapper(tls)
        } else {
            Tls::Opportunistic(tls)
        })
        .timeout(Some(mail.timeout))
        .pool_config(PoolConfig::new().max_size(mail.concurrency as u32));
    if !url.username().is_empty() {
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| url_err("credentials are not valid percent-encoded UTF-8"))
        };
        let user = decode(url.username())?;
        let pass = decode(url.password().unwrap_or(""))?;
        builder = builder.credentials(Credentials::new(user, pass));
    }
    Ok(builder.build())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_credentials() {
        assert_eq!(percent_decode("us%40er").as_deref(), Some("us@er"));
        assert_eq!(percent_decode("p%3Ass").as_deref(), Some("p:ss"));
        assert_eq!(percent_decode("bad%4"), None);
    }
}
