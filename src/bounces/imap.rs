//! The bounce mailbox: an IMAP client task that reads what comes back to
//! the return path (DSNs, feedback reports), records what it understands and
//! moves it to `[bounces] done_folder`. What it cannot understand stays in
//! the mailbox and is reported, never deleted. It waits with IMAP IDLE when
//! the server offers it, else polls every `[bounces] poll_seconds`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::dsn::{self, Kind as ReportKind, Report};
use super::{event_key, Applied, Event, Kind};
use crate::config::Settings;
use crate::domain::EmailAddress;
use crate::health::Health;
use crate::store::Db;

/// The connection under the IMAP session: plain TCP or TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Session = async_imap::Session<Stream>;

/// The task. See the module documentation.
pub struct BounceMailbox {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub health: Arc<Health>,
    /// Key of VERP envelope senders.
    pub verp_key: Option<Arc<[u8]>>,
}

/// What one pass over the mailbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub recorded: usize,
    pub ignored: usize,
    pub unknown: usize,
}

const COMPONENT: &str = "bounce mailbox";

impl BounceMailbox {
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(url) = self.settings.bounces.imap_url.clone() else {
            return;
        };
        let shown = crate::config::redact(url.as_str());
        let mut backoff = Duration::from_secs(5);
        // UIDs left in place because they were not understood, so they are
        // reported once rather than fetched on every pass.
        let mut skipped: HashSet<u32> = HashSet::new();
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.session(&url, &mut skipped, &shutdown) => r,
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    let msg = format!("{shown}: {e:#}; retrying in {} s", backoff.as_secs());
                    if self.health.report(COMPONENT, msg.clone()) {
                        tracing::error!("bounce mailbox {msg}");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
    }

    /// One connection: log in, then process and wait until shutdown or an error.
    async fn session(
        &self,
        url: &url::Url,
        skipped: &mut HashSet<u32>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut session = connect(url).await?;
        let mailbox = mailbox_of(url);
        let done = self.settings.bounces.done_folder.clone();
        // Creating a folder that exists fails harmlessly.
        let _ = session.create(&done).await;
        let caps = session.capabilities().await?;
        let idle = caps.has_str("IDLE");
        let can_move = caps.has_str("MOVE");
        session.select(&mailbox).await?;
        if self.health.clear(COMPONENT).is_some() {
            tracing::info!(mailbox, "bounce mailbox reachable again");
        }
        tracing::info!(mailbox, idle, "reading the bounce mailbox");
        loop {
            let pass = self.process(&mut session, &done, can_move, skipped).await?;
            if pass != Pass::default() {
                tracing::info!(?pass, "bounce mailbox processed");
            }
            if shutdown.is_cancelled() {
                let _ = session.logout().await;
                return Ok(());
            }
            if idle {
                let mut handle = session.idle();
                handle.init().await?;
                let (wait, stop) = handle.wait_with_timeout(Duration::from_secs(25 * 60));
                tokio::select! {
                    r = wait => { r?; }
                    _ = shutdown.cancelled() => { drop(stop); }
                }
                session = handle.done().await?;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.bounces.poll_interval) => {}
                    _ = shutdown.cancelled() => {}
                }
                session.noop().await?;
            }
        }
    }

    /// Reads every message of the selected mailbox not skipped before.
    pub async fn process(
        &self,
        session: &mut Session,
        done: &str,
        can_move: bool,
        skipped: &mut HashSet<u32>,
    ) -> anyhow::Result<Pass> {
        let mut uids: Vec<u32> = session
            .uid_search("ALL")
            .await?
            .into_iter()
            .filter(|u| !skipped.contains(u))
            .collect();
        uids.sort_unstable();
        let mut pass = Pass::default();
        let mut processed = Vec::new();
        for uid in uids {
            let raw = {
                let mut fetches = session.uid_fetch(uid.to_string(), "BODY.PEEK[]").await?;
                let mut body = None;
                while let Some(f) = fetches.next().await {
                    let f = f?;
                    if let Some(b) = f.body() {
                        body = Some(b.to_vec());
                    }
                }
                body
            };
            let Some(raw) = raw else { continue };
            match self.handle(&raw).await? {
                Handled::Recorded(n) => {
                    pass.recorded += n;
                    processed.push(uid);
                }
                Handled::Ignored(why) => {
                    tracing::debug!(uid, why, "bounce mailbox: ignored");
                    pass.ignored += 1;
                    processed.push(uid);
                }
                Handled::Unknown(why) => {
                    tracing::warn!(uid, "bounce mailbox: left in place, not understood: {why}");
                    pass.unknown += 1;
                    skipped.insert(uid);
                }
            }
        }
        if !processed.is_empty() {
            let set = processed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            if can_move {
                session.uid_mv(&set, done).await?;
            } else {
                session.uid_copy(&set, done).await?;
                {
                    let stored = session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                    let _: Vec<_> = stored.collect().await;
                }
                let expunged = session.expunge().await?;
                let _: Vec<_> = expunged.collect().await;
            }
        }
        Ok(pass)
    }

    /// Records what one message reports.
    pub async fn handle(&self, raw: &[u8]) -> anyhow::Result<Handled> {
        let report = dsn::parse(raw);
        let events = match self.events(raw, &report).await? {
            Ok(events) => events,
            Err(handled) => return Ok(handled),
        };
        let mut n = 0;
        for e in &events {
            if super::record_and_check(&self.db, &self.settings, e).await? != Applied::Duplicate {
                n += 1;
            }
        }
        Ok(Handled::Recorded(n))
    }

    /// The events of a report, or why there are none.
    async fn events(
        &self,
        raw: &[u8],
        report: &Report,
    ) -> anyhow::Result<Result<Vec<Event>, Handled>> {
        let outbox = match self.outbox_row(report).await? {
            Ok(o) => o,
            Err(handled) => return Ok(Err(handled)),
        };
        let now = chrono::Utc::now();
        let id = report.message_id.clone().unwrap_or_else(|| {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(raw))
        });
        let mut events = Vec::new();
        let mut push = |recipient: Option<&str>,
                        kind: Kind,
                        status: Option<String>,
                        diagnostic: String,
                        source: &'static str|
         -> Option<Handled> {
            let address = recipient
                .and_then(|r| EmailAddress::parse(r).ok())
                .or_else(|| {
                    outbox
                        .as_ref()
                        .and_then(|(_, to)| EmailAddress::parse(to).ok())
                })?;
            if let Some((_, to)) = &outbox {
                // A signed envelope names one recipient: a report about another is not ours.
                if !to.eq_ignore_ascii_case(address.as_str()) {
                    return Some(Handled::Unknown(format!(
                        "the report names {address}, but its return address belongs to a message for another recipient"
                    )));
                }
            }
            events.push(Event {
                key: event_key(
                    source,
                    &[&id, address.as_str(), status.as_deref().unwrap_or("")],
                ),
                address,
                kind,
                status,
                diagnostic,
                source,
                outbox_id: outbox.as_ref().map(|(id, _)| *id),
                at: now,
            });
            None
        };
        match &report.kind {
            ReportKind::Ignored(why) => return Ok(Err(Handled::Ignored(why))),
            ReportKind::Unknown(why) => return Ok(Err(Handled::Unknown(why.clone()))),
            ReportKind::Bounce(failures) => {
                for f in failures {
                    let kind = f
                        .status
                        .as_deref()
                        .and_then(Kind::from_status)
                        .unwrap_or(Kind::Hard);
                    if let Some(h) = push(
                        f.recipient.as_deref(),
                        kind,
                        f.status.clone(),
                        f.diagnostic.clone(),
                        "dsn",
                    ) {
                        return Ok(Err(h));
                    }
                }
            }
            ReportKind::Complaint {
                recipient,
                feedback_type,
            } => {
                if let Some(h) = push(
                    recipient.as_deref(),
                    Kind::Complaint,
                    None,
                    format!("feedback report: {feedback_type}"),
                    "arf",
                ) {
                    return Ok(Err(h));
                }
            }
        }
        if events.is_empty() {
            return Ok(Err(Handled::Unknown(
                "a report that names no recipient".into(),
            )));
        }
        // Without a signed return address, act only on our own subscribers.
        if outbox.is_none() {
            let mut ours = Vec::new();
            for e in events {
                if crate::store::bounces::is_known_recipient(&self.db, e.address.as_str()).await? {
                    ours.push(e);
                }
            }
            if ours.is_empty() {
                return Ok(Err(Handled::Unknown(
                    "the report names no address casewire has mailed".into(),
                )));
            }
            return Ok(Ok(ours));
        }
        Ok(Ok(events))
    }

    /// The outbox row a report is about, from a signed VERP return address,
    /// with the row's recipient.
    async fn outbox_row(
        &self,
        report: &Report,
    ) -> anyhow::Result<Result<Option<(i64, String)>, Handled>> {
        let Some(key) = &self.verp_key else {
            return Ok(Ok(None));
        };
        // `local+` and `@domain` of our return path, to tell our own VERP addresses.
        let ours = super::verp::return_path(&self.settings).and_then(|rp| {
            rp.to_ascii_lowercase()
                .split_once('@')
                .map(|(l, d)| (format!("{l}+"), format!("@{d}")))
        });
        for a in &report.returned_to {
            if let Some(id) = super::verp::decode(a, key) {
                if let Some(to) = crate::store::bounces::outbox_recipient(&self.db, id).await? {
                    return Ok(Ok(Some((id, to))));
                }
            } else if ours
                .as_ref()
                .is_some_and(|(l, d)| a.starts_with(l.as_str()) && a.ends_with(d.as_str()))
            {
                // Our return path with a signature that does not verify: forged.
                return Ok(Err(Handled::Unknown(format!(
                    "the return address {a} carries a signature that does not verify (forged or altered)"
                ))));
            }
        }
        Ok(Ok(None))
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Recorded this many new events (0: all seen before).
    Recorded(usize),
    Ignored(&'static str),
    Unknown(String),
}

/// The mailbox named by the URL's path (default INBOX).
fn mailbox_of(url: &url::Url) -> String {
    let path = url.path().trim_matches('/');
    if path.is_empty() {
        "INBOX".into()
    } else {
        crate::delivery::transport::percent_decode(path).unwrap_or_else(|| path.to_owned())
    }
}

fn tls_config() -> Arc<tokio_rustls::rustls::ClientConfig> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Arc::new(
        tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

async fn tls(stream: TcpStream, host: &str) -> anyhow::Result<Stream> {
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())?;
    let s = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, stream)
        .await?;
    Ok(Stream::Tls(Box::new(s)))
}

/// Connects and logs in: implicit TLS for `imaps://`; for `imap://`,
/// STARTTLS when offered, and a login without TLS only to a loopback server.
pub async fn connect(url: &url::Url) -> anyhow::Result<Session> {
    use anyhow::Context as _;
    let host = url
        .host_str()
        .context("no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let implicit = url.scheme() == "imaps";
    let port = url.port().unwrap_or(if implicit { 993 } else { 143 });
    let tcp = tokio::time::timeout(
        Duration::from_secs(30),
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    .context("connecting: timed out")?
    .with_context(|| format!("connecting to {host}:{port}"))?;
    let stream = if implicit {
        tls(tcp, &host).await?
    } else {
        Stream::Plain(tcp)
    };
    let mut client = async_imap::Client::new(stream);
    client
        .read_response()
        .await
        .context("the server closed the connection before its greeting")??;
    if !implicit {
        let loopback = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            || host == "localhost";
        match client.run_command_and_check_ok("STARTTLS", None).await {
            Ok(()) => {
                let Stream::Plain(tcp) = client.into_inner() else { unreachable!("plain before STARTTLS") };
                client = async_imap::Client::new(tls(tcp, &host).await?);
            }
            Err(e) if loopback => {
                tracing::debug!("no STARTTLS on the loopback IMAP server ({e}); logging in without TLS");
            }
            Err(e) => anyhow::bail!(
                "the server refused STARTTLS ({e}); casewire does not send the password in clear to a remote server (use imaps://)"
            ),
        }
    }
    let user = crate::delivery::transport::percent_decode(url.username()).unwrap_or_default();
    let pass = crate::delivery::transport::percent_decode(url.password().unwrap_or(""))
        .unwrap_or_default();
    client
        .login(user, pass)
        .await
        .map_err(|(e, _)| anyhow::anyhow!("login refused: {e}"))
}
