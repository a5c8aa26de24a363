//! A real SMTP server for tests: aiosmtpd running `tests/support_smtp.py`
//! on a free 127.0.0.1 port, recording each accepted message as a file. A
//! missing Python or aiosmtpd fails the test with the fix; it never skips.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

pub use super::free_port;

impl SmtpServer {
    /// Starts the server; `args` are extra options of support_smtp.py
    /// (`--tempfail ADDR:N`, `--reject ADDR`, and the misbehaviours listed
    /// at the top of the script, e.g. `--mail-reply "550 5.7.1 …"`).
    pub fn start(args: &[&str]) -> SmtpServer {
        let check = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .unwrap_or_else(|e| panic!("python3 is required for the SMTP tests: {e}"));
        assert!(
            check.status.success(),
            "the SMTP tests need Python's aiosmtpd: pip install aiosmtpd ({})",
            String::from_utf8_lossy(&check.stderr)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support_smtp.py");
        // A free port can be taken by a test starting beside this one before
        // the server binds it: try a few ports before giving up.
        let mut last = String::new();
        for _ in 0..8 {
            let port = free_port();
            let mut child = Command::new("python3")
                .arg(&script)
                .arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(dir.path().join("received"))
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting tests/support_smtp.py");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .expect("reading the SMTP server's READY line");
            if line.starts_with("READY") {
                return SmtpServer { port, dir, child };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = line;
        }
        panic!("SMTP server did not start on any of 8 free ports: {last:?}");
    }

    /// Switches the server's misbehaviour off (`true`) or back on: the
    /// handler looks for the flag file on every command.
    pub fn heal(&self, healed: bool) {
        let flag = self.dir.path().join("received").join(".healed");
        if healed {
            std::fs::write(&flag, b"").expect("writing the SMTP server's flag file");
        } else {
            let _ = std::fs::remove_file(&flag);
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every accepted message as (recipient, file), in arrival order.
    pub fn received(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(self.dir.path().join("received"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let rcpt = name.strip_suffix(".eml")?.split_once('-')?.1.to_owned();
                        (!name.starts_with('.')).then(|| (rcpt, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    pub fn received_count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("received"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn received_by(&self, rcpt: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|(r, _)| r == &rcpt.to_lowercase())
            .map(|(_, p)| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Waits until at least `n` messages arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.received_count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
