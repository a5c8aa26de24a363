//! The configured way out: an SMTP connection pool (lettre, STARTTLS when
//! offered on `smtp://`, implicit TLS on `smtps://`) or a folder of `.eml`
//! files. Each part of a send is bounded by `mail.timeout`, and every failure says at
//! which SMTP stage it happened and what the server replied, so that the
//! failure policy ([`super::policy`]) can tell whose fault it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};

use super::policy::{self, Fault, Reply, Stage};
use crate::config::{MailSettings, Transport};

/// A send that failed: where in the conversation, and what the server
/// said (None when it said nothing: a refused or dropped connection, a
/// timeout). [`DeliveryError::fault`] says whose fault it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct DeliveryError {
    pub stage: Stage,
    pub reply: Option<Reply>,
    /// What went wrong when there is no reply, or the client's own words.
    pub detail: String,
}

impl DeliveryError {
    pub fn new(stage: Stage, reply: Option<Reply>, detail: impl Into<String>) -> Self {
        Self {
            stage,
            reply,
            detail: detail.into(),
        }
    }

    /// A lettre error at `stage`. TLS errors are tagged as such wherever
    /// they happen (STARTTLS, implicit TLS).
    pub fn from_lettre(stage: Stage, e: &lettre::transport::smtp::Error) -> Self {
        use std::error::Error as _;
        let reply = e.status().map(|code| {
            Reply::new(
                code.to_string().parse().unwrap_or(0),
                e.source().map(|s| s.to_string()).unwrap_or_default(),
            )
        });
        let stage = if e.is_tls() { Stage::Tls } else { stage };
        Self::new(stage, reply, e.to_string())
    }

    /// Whose fault this failure is ([`policy::classify`]).
    pub fn fault(&self) -> Fault {
        policy::classify(self.stage, self.reply.as_ref())
    }

    fn describe(&self) -> String {
        match &self.reply {
            Some(r) => format!("{} at {}", r, self.stage),
            None => format!("{} at {}", self.detail, self.stage),
        }
    }
}

/// A send that did not end in the relay's acceptance.
#[derive(Debug)]
pub enum SendError<P> {
    /// The relay, the connection or the file failed; `passed` is what the
    /// gate yielded when the failure came after it.
    Failed {
        error: DeliveryError,
        passed: Option<P>,
    },
    /// The gate stayed shut for `mail.timeout`: the transaction was
    /// abandoned before its end, so nothing was delivered and the
    /// relay is not to blame.
    Held,
}

/// Why a login was not attempted: `smtp_url` has credentials, the relay
/// offers no STARTTLS and `mail.allow_plaintext_auth` is off.
pub const PLAINTEXT_AUTH_REFUSED: &str = "it offers no STARTTLS, so the password in mail.smtp_url would go out in clear and was not sent";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("[mail] smtp_url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("[mail] file_dir {dir}: cannot create the folder: {source}")]
    FileDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("[mail] smtp_url: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

enum Inner {
    /// casewire's own pool of lettre connections (see [`SmtpPool`]).
    Smtp(SmtpPool),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Pooled SMTP connections, each send tagged with the stage it reached.
///
/// Plain `smtp://` sockets get `TCP_NODELAY`: lettre's own transport cannot
/// set that option, and it writes a message's content and the final `.` line
/// in two writes; with Nagle's algorithm the second write waits for the
/// server's delayed ACK, 40 ms per message on Linux (measured: 170 messages/s
/// at 8 connections). lettre's [`AsyncSmtpConnection`] still speaks the
/// protocol (EHLO, STARTTLS, AUTH, dot-stuffing); only the socket and the
/// order of commands are ours, so that every failure names its stage.
struct SmtpPool {
    host: String,
    port: u16,
    /// STARTTLS when the server offers it, or implicit TLS (`smtps://`).
    tls: TlsParameters,
    implicit_tls: bool,
    credentials: Option<Credentials>,
    /// `mail.allow_plaintext_auth`: send credentials without TLS.
    allow_plaintext_auth: bool,
    hello: ClientId,
    timeout: Duration,
    max_idle: usize,
    /// A std Mutex: held to push or pop, never across an await.
    idle: std::sync::Mutex<Vec<(Session, Instant)>>,
}

/// One open connection and what its relay offers beyond what lettre records.
struct Session {
    conn: AsyncSmtpConnection,
    /// The relay offers PIPELINING (RFC 2920): a message's MAIL, RCPT and
    /// DATA go out in one write, and their replies are read after it.
    pipelining: bool,
    /// The plain socket under `conn`, while the session is not encrypted:
    /// a message's content goes out through it before the gate, without
    /// the final `.` line (see [`SmtpPool::send`]).
    plain: Option<PlainSocket>,
}

/// A plain TCP socket shared by lettre's connection (which reads replies
/// and writes commands through it) and the pool (which writes a message's
/// content through it while lettre waits for nothing). The two never use
/// it at once: a send is one task, and lettre is idle between its calls.
#[derive(Debug, Clone)]
struct PlainSocket(Arc<std::sync::Mutex<tokio::net::TcpStream>>);

impl PlainSocket {
    /// Runs one poll of the socket. A std Mutex: held for the poll only,
    /// never across an await.
    fn with<R>(&self, f: impl FnOnce(Pin<&mut tokio::net::TcpStream>) -> R) -> R {
        let mut stream = self.0.lock().expect("not poisoned");
        f(Pin::new(&mut *stream))
    }
}

impl AsyncRead for PlainSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for PlainSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|s| s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_shutdown(cx))
    }
}

impl AsyncTokioStream for PlainSocket {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.lock().expect("not poisoned").peer_addr()
    }
}

/// A connection idle longer than this is checked with NOOP before reuse
/// (servers close idle sessions); busier ones are reused as they are.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(2);
/// Idle connections older than this are closed instead of reused.
const IDLE_MAX: Duration = Duration::from_secs(60);

/// The stage a send has reached, readable after its future was dropped by
/// the timeout (an atomic, because the future must be `Send`).
#[derive(Default)]
struct StageMark(AtomicU8);

const STAGES: [Stage; 8] = [
    Stage::Connect,
    Stage::Tls,
    Stage::Greeting,
    Stage::Auth,
    Stage::MailFrom,
    Stage::RcptTo,
    Stage::Data,
    Stage::Content,
];

impl StageMark {
    fn set(&self, stage: Stage) {
        let i = STAGES.iter().position(|s| *s == stage).unwrap_or(0);
        self.0.store(i as u8, Ordering::Relaxed);
    }
    fn get(&self) -> Stage {
        STAGES[usize::from(self.0.load(Ordering::Relaxed)).min(STAGES.len() - 1)]
    }
}

impl SmtpPool {
    async fn connect(&self, mark: &StageMark) -> Result<Session, DeliveryError> {
        let target = format!("{}:{}", self.host, self.port);
        mark.set(Stage::Connect);
        let mut plain = None;
        let mut conn = if self.implicit_tls {
            // lettre does the TCP connect and the handshake before the greeting.
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(self.tls.clone()),
                None,
            )
            .await
            .map_err(|e| {
                let stage = if e.status().is_some() {
                    Stage::Greeting
                } else {
                    Stage::Connect
                };
                DeliveryError::from_lettre(stage, &e)
            })?
        } else {
            let connecting = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
            let stream = tokio::time::timeout(self.timeout, connecting)
                .await
                .map_err(|_| {
                    DeliveryError::new(
                        Stage::Connect,
                        None,
                        format!("connecting to {target}: timed out"),
                    )
                })?
                .map_err(|e| {
                    DeliveryError::new(Stage::Connect, None, format!("connecting to {target}: {e}"))
                })?;
            stream.set_nodelay(true).map_err(|e| {
                DeliveryError::new(Stage::Connect, None, format!("connecting to {target}: {e}"))
            })?;
            mark.set(Stage::Greeting);
            let socket = PlainSocket(Arc::new(std::sync::Mutex::new(stream)));
            plain = Some(socket.clone());
            AsyncSmtpConnection::connect_with_transport(Box::new(socket), &self.hello)
                .await
                .map_err(|e| DeliveryError::from_lettre(Stage::Greeting, &e))?
        };
        if !self.implicit_tls && conn.can_starttls() {
            mark.set(Stage::Tls);
            conn.starttls(self.tls.clone(), &self.hello)
                .await
                .map_err(|e| DeliveryError::from_lettre(Stage::Tls, &e))?;
            // Bytes written to the socket now would bypass the encryption.
            plain = None;
        }
        mark.set(Stage::Greeting);
        let pipelining = offers_pipelining(&mut conn, &self.hello).await?;
        if let Some(c) = &self.credentials {
            mark.set(Stage::Auth);
            if !conn.is_encrypted() && !self.allow_plaintext_auth {
                // A relay fault like any other at AUTH: delivery pauses, nobody is suppressed.
                return Err(DeliveryError::new(
                    Stage::Auth,
                    None,
                    PLAINTEXT_AUTH_REFUSED,
                ));
            }
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
                .await
                .map_err(|e| DeliveryError::from_lettre(Stage::Auth, &e))?;
        }
        Ok(Session {
            conn,
            pipelining,
            plain,
        })
    }

    async fn checkout(&self, mark: &StageMark) -> Result<Session, DeliveryError> {
        loop {
            let parked = self.idle.lock().expect("not poisoned").pop();
            let Some((mut session, since)) = parked else {
                return self.connect(mark).await;
            };
            let idle = since.elapsed();
            if idle > IDLE_MAX {
                session.conn.abort().await;
                continue;
            }
            if idle > IDLE_CHECK_AFTER && !session.conn.test_connected().await {
                session.conn.abort().await;
                continue;
            }
            return Ok(session);
        }
    }

    /// One transaction: a connection from the pool, MAIL, RCPT and DATA,
    /// the content without its final `.` line, then `gate`, then that line
    /// and the relay's reply. A relay delivers nothing until the `.` line
    /// (RFC 5321 4.1.1.4: a transaction cut off before it is abandoned), so
    /// the gate stands right before it: the relay reads the content while
    /// the results of the messages before it commit, and a message stopped
    /// at the gate (or by a kill) is not delivered. On an encrypted session
    /// lettre owns the TLS stream, so the content waits at the gate whole.
    /// Each part is bounded by `timeout` on its own; the wait at the gate
    /// is not the relay's time, so a gate that stays shut that long
    /// abandons the transaction before its end ([`SendError::Held`])
    /// instead of blaming the relay.
    async fn send<P>(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        gate: impl Future<Output = P>,
        timeout: Duration,
    ) -> Result<P, SendError<P>> {
        let mark = StageMark::default();
        let opened = tokio::time::timeout(timeout, async {
            let mut session = self.checkout(&mark).await?;
            match open(&mut session, envelope, bytes, &mark).await {
                Ok(()) => Ok(session),
                Err(e) => {
                    self.put_back(session).await;
                    Err(e)
                }
            }
        })
        .await;
        let failed = |error, passed| SendError::Failed { error, passed };
        let mut session = match opened {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => return Err(failed(e, None)),
            Err(_) => return Err(failed(timed_out(mark.get(), timeout), None)),
        };
        let ahead = session.plain.is_some();
        if let Some(mut socket) = session.plain.clone() {
            // The content, dot-stuffed, without its final CRLF `.` CRLF.
            let written = tokio::time::timeout(timeout, write_stuffed(&mut socket, bytes)).await;
            let error = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(DeliveryError::new(
                    Stage::Content,
                    None,
                    format!("writing the content: {e}"),
                )),
                Err(_) => Some(timed_out(Stage::Content, timeout)),
            };
            if let Some(error) = error {
                // Nothing delivered: the relay never saw the end of it.
                session.conn.abort().await;
                return Err(failed(error, None));
            }
        }
        let Ok(passed) = tokio::time::timeout(timeout, gate).await else {
            // The relay waits for (the rest of) the content: closing the
            // connection (not QUIT, which would read as content) ends the
            // transaction with nothing delivered.
            drop(session);
            return Err(SendError::Held);
        };
        let stuffed;
        let rest = if ahead {
            Rest::End
        } else if let Ok(text) = std::str::from_utf8(bytes) {
            stuffed = dot_stuff(text);
            Rest::Stuffed(&stuffed)
        } else {
            Rest::Raw(bytes)
        };
        let sent = tokio::time::timeout(timeout, content(&mut session, rest)).await;
        let Ok(sent) = sent else {
            // Cut off mid-content: the connection is in no known state.
            return Err(failed(timed_out(Stage::Content, timeout), Some(passed)));
        };
        self.put_back(session).await;
        match sent {
            Ok(_) => Ok(passed),
            Err(e) => Err(failed(e, Some(passed))),
        }
    }

    /// A session back to the idle list, or closed when it broke.
    async fn put_back(&self, mut session: Session) {
        if session.conn.has_broken() {
            session.conn.abort().await;
        } else {
            let mut idle = self.idle.lock().expect("not poisoned");
            if idle.len() < self.max_idle {
                idle.push((session, Instant::now()));
            }
        }
    }

    async fn shutdown(&self) {
        let conns: Vec<_> = std::mem::take(&mut *self.idle.lock().expect("not poisoned"));
        for (mut s, _) in conns {
            let _ = s.conn.quit().await;
        }
    }
}

/// Whether the relay lists PIPELINING in its answer to EHLO. lettre keeps
/// only the extensions it uses itself, so EHLO is sent once more on a new
/// connection (before AUTH; RFC 5321 lets a client repeat it, which resets
/// nothing but the mail transaction) and its lines are read here. A relay
/// that refuses the repeated EHLO is spoken to one command at a time.
async fn offers_pipelining(
    conn: &mut AsyncSmtpConnection,
    hello: &ClientId,
) -> Result<bool, DeliveryError> {
    match conn.command(Ehlo::new(hello.clone())).await {
        Ok(reply) => Ok(reply.message().skip(1).any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
        })),
        Err(e) if e.status().is_some() => Ok(false),
        Err(e) => Err(DeliveryError::from_lettre(Stage::Greeting, &e)),
    }
}

/// The start of one SMTP transaction on `session`: MAIL (with SMTPUTF8
/// or 8BITMIME when the envelope or content needs them), RCPT per
/// recipient, DATA; each command's failure carries its stage, and any
/// failure aborts the connection. Where the relay offers PIPELINING, MAIL,
/// RCPT and DATA go out in one write and their replies are read in order
/// after it (one round trip instead of three); the first refusal ends the
/// transaction with its own stage, as it does one command at a time.
/// [`content`] finishes the transaction.
async fn open(
    session: &mut Session,
    envelope: &Envelope,
    bytes: &[u8],
    mark: &StageMark,
) -> Result<(), DeliveryError> {
    let conn = &mut session.conn;
    let ascii = |a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii();
    let ascii_addresses = envelope.from().is_none_or(ascii) && envelope.to().iter().all(ascii);
    let mut params = Vec::new();
    if !ascii_addresses {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(DeliveryError::new(
                Stage::MailFrom,
                Some(Reply::new(
                    553,
                    "5.6.7 the relay does not offer SMTPUTF8, which this address needs",
                )),
                "SMTPUTF8 not offered",
            ));
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(DeliveryError::new(
                Stage::Data,
                Some(Reply::new(
                    554,
                    "5.6.3 the relay does not offer 8BITMIME, which this message needs",
                )),
                "8BITMIME not offered",
            ));
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let pipelining = session.pipelining;
    let result = async {
        let mail = Mail::new(envelope.from().cloned(), params);
        let rcpts = envelope
            .to()
            .iter()
            .map(|to| Rcpt::new(to.clone(), Vec::new()));
        if pipelining {
            use std::fmt::Write as _;
            let mut group = mail.to_string();
            for rcpt in rcpts {
                let _ = write!(group, "{rcpt}");
            }
            let _ = write!(group, "{Data}");
            mark.set(Stage::MailFrom);
            conn.command(Prepared(group))
                .await
                .map_err(at(Stage::MailFrom))?;
            mark.set(Stage::RcptTo);
            for _ in envelope.to() {
                conn.read_response().await.map_err(at(Stage::RcptTo))?;
            }
            mark.set(Stage::Data);
            conn.read_response().await.map_err(at(Stage::Data))?;
        } else {
            mark.set(Stage::MailFrom);
            conn.command(mail).await.map_err(at(Stage::MailFrom))?;
            mark.set(Stage::RcptTo);
            for rcpt in rcpts {
                conn.command(rcpt).await.map_err(at(Stage::RcptTo))?;
            }
            mark.set(Stage::Data);
            conn.command(Data).await.map_err(at(Stage::Data))?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        conn.abort().await;
    }
    result
}

/// What is left of a transaction's content once the gate is passed.
enum Rest<'a> {
    /// Only the final `.` line: the rest went out before the gate.
    End,
    /// The dot-stuffed content with its final `.` line.
    Stuffed(&'a str),
    /// Content that is not UTF-8, for lettre to stuff.
    Raw(&'a [u8]),
}

/// The end of a transaction's content: CRLF `.` CRLF ([`dot_stuff`] ends
/// with it; [`write_stuffed`] leaves it out).
const END: &str = "\r\n.\r\n";

/// Writes `bytes` as DATA content (RFC 5321 4.5.2: a `.` added to every
/// line that starts with one) without the end ([`END`]), straight from
/// `bytes`: the pieces between added dots go out in vectored writes, with
/// no stuffed copy of the message.
async fn write_stuffed(socket: &mut PlainSocket, bytes: &[u8]) -> std::io::Result<()> {
    let mut pieces: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(3);
    if bytes.first() == Some(&b'.') {
        pieces.push(std::io::IoSlice::new(b"."));
    }
    let mut from = 0;
    for at in memchr::memmem::find_iter(bytes, b"\r\n.") {
        pieces.push(std::io::IoSlice::new(&bytes[from..at + 2]));
        pieces.push(std::io::IoSlice::new(b"."));
        from = at + 2;
    }
    if from < bytes.len() {
        pieces.push(std::io::IoSlice::new(&bytes[from..]));
    }
    let mut pieces = &mut pieces[..];
    while !pieces.is_empty() {
        let n = socket.write_vectored(pieces).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut pieces, n);
    }
    Ok(())
}

/// The (rest of the) content of a transaction [`open`] started, and the
/// relay's reply to it: the relay's acceptance. The content is dot-stuffed
/// with a substring search and goes out in one write with its final `.`
/// line (lettre stuffs byte by byte, which was the largest single cost of
/// a digest). A failure aborts the connection.
async fn content(session: &mut Session, rest: Rest<'_>) -> Result<Response, DeliveryError> {
    let conn = &mut session.conn;
    let result = match rest {
        Rest::End => conn.command(Prepared(END)).await,
        Rest::Stuffed(text) => conn.command(Prepared(text)).await,
        Rest::Raw(bytes) => conn.message(bytes).await,
    }
    .map_err(at(Stage::Content));
    if result.is_err() {
        conn.abort().await;
    }
    result
}

/// Tags a lettre error with the stage it happened at.
fn at(stage: Stage) -> impl Fn(lettre::transport::smtp::Error) -> DeliveryError {
    move |e| DeliveryError::from_lettre(stage, &e)
}

/// The error of a part of a send that took longer than `mail.timeout`.
fn timed_out(stage: Stage, timeout: Duration) -> DeliveryError {
    DeliveryError::new(
        stage,
        None,
        format!(
            "no answer within {} s ([mail] timeout_seconds)",
            timeout.as_secs()
        ),
    )
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

/// Text written by lettre's `command` as it is: prepared DATA content, or a
/// group of pipelined commands.
struct Prepared<T>(T);

impl<T: AsRef<str>> std::fmt::Display for Prepared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// A transport built from `[mail]`. Cheap to share behind an `Arc`.
pub struct Mailer {
    inner: Inner,
    timeout: Duration,
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
        Ok(Arc::new(Self {
            inner,
            timeout: mail.timeout,
        }))
    }

    /// Sends finished message bytes. `gate` is awaited right before the
    /// step that delivers them (the end of the SMTP transaction's content,
    /// see [`SmtpPool::send`]; the writing of the `.eml` file), and what it
    /// yields is handed back with the result once that step was taken,
    /// whatever came of it: from then on the message may have been
    /// accepted. Each part of a send is bounded by `mail.timeout`.
    pub async fn send_raw<P>(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        gate: impl Future<Output = P>,
    ) -> Result<P, SendError<P>> {
        match &self.inner {
            Inner::Smtp(p) => p.send(envelope, bytes, gate, self.timeout).await,
            Inner::File(t) => {
                let passed = gate.await;
                let written = tokio::time::timeout(self.timeout, t.send_raw(envelope, bytes)).await;
                let error = match written {
                    Ok(Ok(_)) => return Ok(passed),
                    Ok(Err(e)) => DeliveryError::new(
                        Stage::Connect,
                        None,
                        format!("writing the .eml file: {e}"),
                    ),
                    Err(_) => timed_out(Stage::Connect, self.timeout),
                };
                Err(SendError::Failed {
                    error,
                    passed: Some(passed),
                })
            }
        }
    }

    /// Where mail goes, for messages: `host:port`, or the .eml folder.
    pub fn target(&self) -> String {
        match &self.inner {
            Inner::Smtp(p) => format!("{}:{}", p.host, p.port),
            Inner::File(_) => "the .eml folder".into(),
        }
    }

    /// Closes pooled connections.
    pub async fn shutdown(&self) {
        match &self.inner {
            Inner::Smtp(p) => p.shutdown().await,
            Inner::File(_) => {}
        }
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
    Ok(Inner::Smtp(SmtpPool {
        host,
        port,
        tls,
        implicit_tls,
        credentials,
        allow_plaintext_auth: mail.allow_plaintext_auth,
        hello: ClientId::default(),
        timeout: mail.timeout,
        max_idle: mail.concurrency,
        idle: Default::default(),
    }))
}

/// Percent-decodes URL credentials and paths (`%40` is `@`); None when
/// the escapes or the UTF-8 are broken.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
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

    /// What [`write_stuffed`] puts on the wire, then [`END`], is what
    /// [`dot_stuff`] makes of the same content.
    #[tokio::test]
    async fn content_written_ahead_is_the_stuffed_content() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for text in [
            "a\r\n.b\r\n..c\r\nd.",
            ".x",
            "",
            "plain\r\nlines\r\n",
            "\r\n.\r\n.",
        ] {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let mut socket = PlainSocket(Arc::new(std::sync::Mutex::new(client)));
            write_stuffed(&mut socket, text.as_bytes()).await.unwrap();
            socket.write_all(END.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            let mut got = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut server, &mut got)
                .await
                .unwrap();
            assert_eq!(got, dot_stuff(text), "{text:?}");
        }
    }

    #[test]
    fn percent_decoding_of_credentials() {
        assert_eq!(percent_decode("us%40er").as_deref(), Some("us@er"));
        assert_eq!(percent_decode("p%3Ass").as_deref(), Some("p:ss"));
        assert_eq!(percent_decode("bad%4"), None);
    }
}
