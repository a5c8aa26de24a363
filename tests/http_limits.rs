//! Slow and greedy clients over real sockets: a half-sent request, a silent
//! connection and an idle keep-alive connection are closed after their
//! deadlines, connections over the per-address and the total cap are refused,
//! and the server keeps answering everyone else.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::{spawn_app, AppOptions, TestApp};

/// Long enough that only a server that never closes the connection hits it.
const GUARD: Duration = Duration::from_secs(15);

/// The daemon with `http` lines in its `[http]` section.
async fn spawn(http: &str) -> TestApp {
    let app = spawn_app(AppOptions::sqlite().editions("").http(http)).await;
    assert!(
        app.config_text.contains(http),
        "the [http] keys are in the config"
    );
    app
}

/// A connection to `server` from the loopback address `from` (any of 127/8).
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .unwrap_or_else(|e| {
            panic!("cannot bind {from} (the loopback network 127.0.0.0/8 is needed): {e}")
        });
    socket.connect(server).await.expect("connect")
}

/// Everything the server sends until it closes the connection; panics if it
/// keeps the connection open past the guard.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(GUARD, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "{what}: the server kept the connection open for {GUARD:?}; received so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends one keep-alive request and reads its whole response (head and
/// `content-length` bytes of body), leaving the connection open.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("a response")
            .expect("read");
        assert!(n > 0, "closed before the response was complete: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Waits until a fresh connection from `from` is answered 200 (the server
/// notices closed connections as it reads them, not at once).
async fn answers(from: &str, server: SocketAddr) {
    for _ in 0..200 {
        let mut stream = connect_from(from, server).await;
        if request_or_refusal(&mut stream)
            .await
            .starts_with("HTTP/1.1 200")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server no longer answers connections from {from}");
}

async fn request_or_refusal(stream: &mut TcpStream) -> String {
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    read_until_closed(stream, "a request with Connection: close").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_held_connections_forever() {
    let app = spawn("header_timeout_seconds = 1\nidle_timeout_seconds = 1").await;

    // A request head that never ends is closed after the header deadline.
    let mut half = connect_from("127.0.0.1", app.app().addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .unwrap();
    let got = read_until_closed(&mut half, "a half-sent request").await;
    assert!(!got.contains("200 OK"), "{got}");

    // A connection that never says anything is closed as idle.
    let mut silent = connect_from("127.0.0.1", app.app().addr).await;
    read_until_closed(&mut silent, "a silent connection").await;

    // A kept-alive connection is closed once it idles after a response.
    let mut kept = connect_from("127.0.0.1", app.app().addr).await;
    let first = request(&mut kept, "/healthz").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = request(&mut kept, "/healthz").await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "keep-alive works: {second}"
    );
    let after = read_until_closed(&mut kept, "an idle keep-alive connection").await;
    assert_eq!(after, "");

    // Normal requests are still answered.
    let r = reqwest::get(format!("http://{}/healthz", app.app().addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_from_one_address_exhausted_descriptors() {
    let app = spawn("max_connections_per_ip = 3\nidle_timeout_seconds = 60").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", app.app().addr).await);
    }
    // The server accepts in order, so the fourth is counted after the three.
    let mut fourth = connect_from("127.0.0.1", app.app().addr).await;
    let refused = read_until_closed(&mut fourth, "a connection over the per-address cap").await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused:?}");

    // Another address is served meanwhile.
    let mut other = connect_from("127.0.0.2", app.app().addr).await;
    let ok = request_or_refusal(&mut other).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");

    // The held connections still work, and closing them frees the address.
    let r = request(&mut held[0], "/healthz").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    drop(held);
    answers("127.0.0.1", app.app().addr).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_total_cap_are_refused() {
    let app =
        spawn("max_connections = 4\nmax_connections_per_ip = 0\nidle_timeout_seconds = 60").await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(connect_from(&format!("127.0.0.{}", 10 + i), app.app().addr).await);
    }
    let mut fifth = connect_from("127.0.0.20", app.app().addr).await;
    let refused = read_until_closed(&mut fifth, "a connection over the total cap").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    drop(held);
    answers("127.0.0.20", app.app().addr).await;
    app.stop().await;
}
