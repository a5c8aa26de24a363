//! The connection layer under the router: our own accept loop over hyper's
//! HTTP/1 connections, so that every connection has deadlines (a request head
//! must arrive in time, an idle connection is closed) and the daemon caps
//! connections per IP address and in total, below its descriptor limit, so a
//! crowd of slow clients cannot starve content files, the database or SMTP.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpSettings;

/// Deadlines and caps of the HTTP server, fixed at start.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Open connections at most, always below the descriptor limit.
    pub max_connections: usize,
    /// Open connections from one address at most; 0 means no cap.
    pub max_connections_per_ip: usize,
}

impl Limits {
    /// The configured limits, with the total capped by `RLIMIT_NOFILE`.
    pub fn from_settings(http: &HttpSettings) -> Limits {
        let nofile = crate::descriptors::limit();
        let ceiling = crate::descriptors::connection_ceiling(nofile);
        let max_connections = match http.max_connections {
            Some(n) if n > ceiling => {
                tracing::warn!(
                    "[http] max_connections = {n} exceeds what the descriptor limit allows \
                     (RLIMIT_NOFILE {nofile}, keeping room for files, the database and SMTP); \
                     using {ceiling}: raise the limit (ulimit -n, systemd LimitNOFILE=) to allow more"
                );
                ceiling
            }
            Some(n) => n,
            None => ceiling,
        };
        Limits {
            header_timeout: http.header_timeout,
            idle_timeout: http.idle_timeout,
            max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then stops accepting,
/// closes idle connections and lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let limits = Arc::new(limits);
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp {
        cap: limits.max_connections_per_ip,
        open: Mutex::new(HashMap::new()),
    });
    let connections = TaskTracker::new();
    tracing::debug!(?limits, "HTTP connection limits");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE/ENFILE and aborted handshakes: the listener stays
                // good; wait a little so a full table can drain.
                tracing::warn!(error = %e, "cannot accept an HTTP connection; retrying shortly");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            refuse(
                stream,
                peer,
                "503 Service Unavailable",
                "too many connections; try again shortly",
                "total",
            );
            continue;
        };
        let Some(slot) = PerIp::claim(&per_ip, peer.ip()) else {
            refuse(
                stream,
                peer,
                "429 Too Many Requests",
                "too many connections from your address",
                "per_ip",
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            metrics::gauge!("casewire_http_connections_open").increment(1.0);
            connection(stream, peer, router, &limits, shutdown).await;
            metrics::gauge!("casewire_http_connections_open").decrement(1.0);
            drop((permit, slot));
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Answers a connection over a cap with a short plain response and closes it.
fn refuse(stream: TcpStream, peer: SocketAddr, status: &str, why: &str, cap: &'static str) {
    metrics::counter!("casewire_http_connections_refused_total", "cap" => cap).increment(1);
    tracing::debug!(%peer, cap, "connection refused: over the cap");
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{why}\n",
        why.len() + 1
    );
    // A fresh socket's send buffer is empty: this never blocks the accept loop.
    let _ = stream.try_write(reply.as_bytes());
}

/// One connection: hyper's HTTP/1 state machine, raced against the deadline
/// of its current phase and against shutdown.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = watch::channel(Phase::Idle(Instant::now()));
    let phase = Arc::new(tx);
    let io = TokioIo::new(Watched {
        io: stream,
        phase: phase.clone(),
    });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = Busy::start(phase.clone());
        let mut router = router.clone();
        async move {
            // A Router is always ready, so `call` needs no `poll_ready` first.
            let response =
                tower::Service::call(&mut router, request.map(axum::body::Body::new)).await;
            drop(busy);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            why = expired(&mut rx, limits) => {
                metrics::counter!("casewire_http_connections_timed_out_total", "phase" => why).increment(1);
                tracing::debug!(%peer, phase = why, "closing a connection past its deadline");
                break;
            }
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Where a connection stands; its deadline follows from it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in progress since this instant (accept, or the last byte
    /// of a response written): closed after the idle timeout.
    Idle(Instant),
    /// The first byte of a request head arrived at this instant: the head
    /// must be complete within the header timeout.
    Head(Instant),
    /// This many requests are being answered: no deadline.
    Busy(usize),
}

/// Resolves when the current phase's deadline passes, naming the phase.
async fn expired(rx: &mut watch::Receiver<Phase>, limits: &Limits) -> &'static str {
    loop {
        let deadline = match *rx.borrow_and_update() {
            Phase::Idle(since) => Some((since + limits.idle_timeout, "idle")),
            Phase::Head(since) => Some((since + limits.header_timeout, "header")),
            Phase::Busy(_) => None,
        };
        let changed = async {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        match deadline {
            Some((at, why)) => tokio::select! {
                _ = tokio::time::sleep_until(at) => return why,
                _ = changed => {}
            },
            None => changed.await,
        }
    }
}

/// Marks a request in progress from the moment hyper has its head until its
/// response is ready (also when the handler is dropped).
struct Busy(Arc<watch::Sender<Phase>>);

impl Busy {
    fn start(phase: Arc<watch::Sender<Phase>>) -> Busy {
        phase.send_modify(|p| {
            *p = match *p {
                Phase::Busy(n) => Phase::Busy(n + 1),
                _ => Phase::Busy(1),
            }
        });
        Busy(phase)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|p| {
            *p = match *p {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            }
        });
    }
}

/// The socket, reporting progress: a byte read while idle starts a request
/// head; a byte written while idle (a response going out) restarts the idle
/// clock, so a slow but reading client is not cut off mid-response.
struct Watched {
    io: TcpStream,
    phase: Arc<watch::Sender<Phase>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.send_if_modified(|p| match p {
                Phase::Idle(_) => {
                    *p = Phase::Head(Instant::now());
                    true
                }
                _ => false,
            });
        }
        result
    }
}

impl Watched {
    fn wrote(&self, n: usize) {
        if n > 0 {
            self.phase.send_if_modified(|p| match p {
                Phase::Idle(_) => {
                    *p = Phase::Idle(Instant::now());
                    true
                }
                _ => false,
            });
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.wrote(n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.wrote(n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Open connections per address. A std Mutex: held for a map update only,
/// never across an await.
struct PerIp {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted against its address; released on drop.
struct IpSlot(Option<(Arc<PerIp>, IpAddr)>);

impl PerIp {
    fn claim(this: &Arc<PerIp>, ip: IpAddr) -> Option<IpSlot> {
        if this.cap == 0 {
            return Some(IpSlot(None));
        }
        let mut open = this.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= this.cap {
            return None;
        }
        *n += 1;
        Some(IpSlot(Some((this.clone(), ip))))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.0.take() {
            let mut open = per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}
