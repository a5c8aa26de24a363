//! The configured way out: an SMTP connection pool (lettre, STARTTLS when
//! offered on `smtp://`, implicit TLS on `smtps://`) or a folder of `.eml`
//! files. Every send is bounded by `mail.timeout`, and every failure is
//! classified as permanent (never retry, suppress) or transient (retry later).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::message::dkim::DkimConfig;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSettings, Transport};

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
    #[error(transparent)]
    DkimKey(#[from] super::dkim::DkimKeyError),
    #[error("[mail] smtp_url: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

enum Inner {
    /// `smtp://`: casewire's own pool of lettre connections (see [`SmtpPool`]).
    Plain(SmtpPool),
    /// `smtps://`: lettre's pooled transport with implicit TLS.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Pooled SMTP connections on sockets with `TCP_NODELAY`.
///
/// lettre's own transport cannot set that option, and it writes a message's
/// content and the final `.` line in two writes: with Nagle's algorithm the
/// second write waits for the server's delayed ACK, 40 ms per message on
/// Linux (measured: 170 messages/s at 8 connections). lettre's
/// [`AsyncSmtpConnection`] still speaks the protocol (EHLO, STARTTLS, AUTH,
/// pipelining of nothing, dot-stuffing); only the socket is ours.
struct SmtpPool {
    host: String,
    port: u16,
    /// STARTTLS when the server offers it.
    tls: TlsParameters,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    max_idle: usize,
    /// A std Mutex: held to push or pop, never across an await.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

/// A connection idle longer than this is checked with NOOP before reuse
/// (servers close idle sessions); busier ones are reused as they are.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(2);
/// Idle connections older than this are closed instead of reused.
const IDLE_MAX: Duration = Duration::from_secs(60);

impl SmtpPool {
    async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        let target = format!("{}:{}", self.host, self.port);
        let connecting = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| DeliveryError::Transient(format!("connecting to {target}: timed out")))?
            .map_err(|e| DeliveryError::Transient(format!("connecting to {target}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| DeliveryError::Transient(format!("connecting to {target}: {e}")))?;
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
            .await
            .map_err(classify)?;
        if conn.can_starttls() {
            conn.starttls(self.tls.clone(), &self.hello)
                .await
                .map_err(classify)?;
        }
        if let Some(c) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
                .await
                .map_err(classify)?;
        }
        Ok(conn)
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        loop {
            let parked = self.idle.lock().expect("not poisoned").pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            let idle = since.elapsed();
            if idle > IDLE_MAX {
                conn.abort().await;
                continue;
            }
            if idle > IDLE_CHECK_AFTER && !conn.test_connected().await {
                conn.abort().await;
                continue;
            }
            return Ok(conn);
        }
    }

    async fn send(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(), DeliveryError> {
        let mut conn = self.checkout().await?;
        let result = transmit(&mut conn, envelope, bytes).await;
        if conn.has_broken() {
            conn.abort().await;
        } else {
            let mut idle = self.idle.lock().expect("not poisoned");
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
        result.map(|_| ()).map_err(classify)
    }

    async fn shutdown(&self) {
        let conns: Vec<_> = std::mem::take(&mut *self.idle.lock().expect("not poisoned"));
        for (mut c, _) in conns {
            let _ = c.quit().await;
        }
    }
}

/// One SMTP transaction on `conn`, as lettre's `AsyncSmtpConnection::send`
/// runs it (MAIL, RCPT per recipient, DATA, content; any error aborts the
/// connection), except that the content is dot-stuffed with a substring
/// search and goes out in one write with its final `.` line. lettre
/// stuffs byte by byte, which was the largest single cost of a digest. Mail
/// that needs SMTPUTF8 or 8BITMIME goes through lettre's own `send`, which
/// negotiates those.
async fn transmit(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    bytes: &[u8],
) -> Result<Response, lettre::transport::smtp::Error> {
    let ascii = |a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii();
    let ascii_addresses = envelope.from().is_none_or(ascii) && envelope.to().iter().all(ascii);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return conn.send(envelope, bytes).await;
    };
    if !ascii_addresses || !text.is_ascii() {
        return conn.send(envelope, bytes).await;
    }
    let content = DataContent(dot_stuff(text));
    let result = async {
        conn.command(Mail::new(envelope.from().cloned(), Vec::new()))
            .await?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), Vec::new())).await?;
        }
        conn.command(Data).await?;
        conn.command(&content).await
    }
    .await;
    if result.is_err() {
        conn.abort().await;
    }
    result
}

/// Message content as the DATA phase sends it (RFC 5321 4.5.2): a `.` added
/// to every line that starts with one, then CRLF `.` CRLF.
fn dot_stuff(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    if text.starts_with('.') {
        out.push('.');
    }
    let mut from = 0;
    for at in memchr::memmem::find_iter(text.as_bytes(), b"\r\n.") {
        out.push_str(&text[from..at + 2]);
        out.push('.');
        from = at + 2;
    }
    out.push_str(&text[from..]);
    out.push_str("\r\n.\r\n");
    out
}

/// Prepared DATA content, written by lettre's `command` as it is.
struct DataContent(String);

impl std::fmt::Display for DataContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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
            Transport::Smtp => smtp_transport(mail)?,
        };
        let dkim = match &mail.dkim {
            None => None,
            Some(d) => Some(super::dkim::DkimKey::load(d)?.config),
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
                    Inner::Plain(p) => p.send(envelope, bytes).await,
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
        match &self.inner {
            Inner::Plain(p) => p.shutdown().await,
            Inner::Smtp(t) => t.shutdown().await,
            Inner::File(_) => {}
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

fn smtp_transport(mail: &MailSettings) -> Result<Inner, TransportError> {
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
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| url_err("credentials are not valid percent-encoded UTF-8"))
    };
    let credentials = if url.username().is_empty() {
        None
    } else {
        Some(Credentials::new(
            decode(url.username())?,
            decode(url.password().unwrap_or(""))?,
        ))
    };
    if !implicit_tls {
        return Ok(Inner::Plain(SmtpPool {
            host,
            port,
            tls,
            credentials,
            hello: ClientId::default(),
            timeout: mail.timeout,
            max_idle: mail.concurrency,
            idle: Default::default(),
        }));
    }
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(Tls::Wrapper(tls))
        .timeout(Some(mail.timeout))
        .pool_config(PoolConfig::new().max_size(mail.concurrency as u32));
    if let Some(c) = credentials {
        builder = builder.credentials(c);
    }
    Ok(Inner::Smtp(builder.build()))
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
    fn dot_stuffing_doubles_leading_dots_and_ends_the_data() {
        assert_eq!(
            dot_stuff("a\r\n.b\r\n..c\r\nd."),
            "a\r\n..b\r\n...c\r\nd.\r\n.\r\n"
        );
        assert_eq!(dot_stuff(".x"), "..x\r\n.\r\n");
        assert_eq!(dot_stuff(""), "\r\n.\r\n");
    }

    #[test]
    fn percent_decoding_of_credentials() {
        assert_eq!(percent_decode("us%40er").as_deref(), Some("us@er"));
        assert_eq!(percent_decode("p%3Ass").as_deref(), Some("p:ss"));
        assert_eq!(percent_decode("bad%4"), None);
    }
}
