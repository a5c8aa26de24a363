//! Postfix's smtp-sink and smtp-source (Debian package postfix), the real
//! SMTP peer and the reference sender of the delivery benchmarks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SINK: &str = "/usr/sbin/smtp-sink";
pub const SOURCE: &str = "/usr/sbin/smtp-source";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running smtp-sink; killed on drop.
pub struct Sink(Child);

impl Sink {
    /// The CPU time the sink has used so far (it is one process).
    pub fn cpu(&self) -> Option<Duration> {
        super::proc_cpu(self.0.id(), false)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_sink(port: u16) -> Sink {
    let child = Command::new(SINK)
        .args(["-u", "nobody", "-m", "1024"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("1024")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{SINK} (Debian package postfix) is needed: {e}"));
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Sink(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("smtp-sink did not start on port {port}");
}

/// smtp-source sending `n` messages of `size` bytes over `concurrency`
/// sessions to the sink on `port`; returns messages per second.
pub fn smtp_source(n: usize, size: usize, concurrency: usize, port: u16) -> f64 {
    let t = Instant::now();
    let status = Command::new(SOURCE)
        .args([
            "-d",
            "-s",
            &concurrency.to_string(),
            "-l",
            &size.to_string(),
            "-m",
            &n.to_string(),
        ])
        .args(["-f", "digest@example.com", "-t", "reader@example.org"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{SOURCE} (Debian package postfix) is needed: {e}"));
    assert!(status.success(), "smtp-source failed: {status}");
    n as f64 / t.elapsed().as_secs_f64()
}
