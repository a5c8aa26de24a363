//! The generated content store shared by the benchmarks: 10,000 case
//! studies of about 4 KB of Markdown each, 1–2 of 8 categories, from a
//! deterministic generator, kept under target/ and reused while it matches.
#![allow(dead_code)]

pub mod postfix;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

pub const STUDIES: usize = 10_000;
/// Bump when the generator changes, so an old store is regenerated.
pub const GENERATOR_VERSION: u32 = 1;

pub const CATEGORIES: [(&str, &str); 8] = [
    ("failure-analysis", "Failure Analysis"),
    ("architecture-design", "Architecture & Design"),
    ("optimization-migration", "Optimization & Migration Wins"),
    ("distributed-systems", "Distributed Systems"),
    ("databases", "Databases"),
    ("security", "Security"),
    ("performance", "Performance"),
    ("ai-infrastructure", "AI Infrastructure"),
];

// ---------------------------------------------------------------------------
// The generated content store.

/// Generates the store unless one of the right size and version exists.
/// Returns whether it generated, and the store's size in bytes.
pub fn ensure_store(root: &Path, content: &Path) -> (bool, u64) {
    let marker = root.join(format!(".complete-{STUDIES}-v{GENERATOR_VERSION}"));
    let generated = if marker.exists() {
        false
    } else {
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(content).expect("bench dir");
        let mut rng = Rng(0x5eed_ca5e_0001);
        for i in 0..STUDIES {
            let (rel, text) = study(i, &mut rng);
            let path = content.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).expect("folders");
            std::fs::write(path, text).expect("write study");
        }
        std::fs::write(root.join("casewire.toml"), config_text(content)).expect("config");
        std::fs::write(&marker, "").expect("marker");
        true
    };
    let bytes = walkdir::WalkDir::new(content)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    (generated, bytes)
}

pub fn config_text(content: &Path) -> String {
    let mut t = format!(
        r#"[site]
title = "Casewire Bench"
description = "Generated case studies"
base_url = "https://example.com/cases/"

[content]
dir = {content:?}

[feeds]
items = 50

[mail]
from = "Bench <bench@example.com>"
"#,
        content = content.display().to_string()
    );
    for (slug, name) in CATEGORIES {
        let _ = write!(
            t,
            "\n[[categories]]\nslug = \"{slug}\"\nname = \"{name}\"\n"
        );
    }
    t
}

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "that",
    "was",
    "for",
    "on",
    "with",
    "when",
    "every",
    "after",
    "before",
    "because",
    "which",
    "our",
    "their",
    "request",
    "latency",
    "pool",
    "connection",
    "database",
    "replica",
    "primary",
    "failover",
    "queue",
    "consumer",
    "producer",
    "partition",
    "leader",
    "lease",
    "clock",
    "retry",
    "backoff",
    "jitter",
    "timeout",
    "cache",
    "stampede",
    "origin",
    "edge",
    "deploy",
    "rollback",
    "canary",
    "schema",
    "migration",
    "index",
    "vacuum",
    "transaction",
    "lock",
    "contention",
    "throughput",
    "tail",
    "p99",
    "allocation",
    "garbage",
    "collector",
    "pause",
    "thread",
    "scheduler",
    "kernel",
    "socket",
    "buffer",
    "backpressure",
    "shard",
    "rebalance",
    "quorum",
    "consensus",
    "snapshot",
    "log",
    "compaction",
    "token",
    "secret",
    "rotation",
    "pipeline",
    "image",
    "registry",
    "signature",
    "model",
    "inference",
    "GPU",
    "batch",
    "warmup",
    "cold",
    "start",
    "memory",
    "pressure",
    "eviction",
    "budget",
    "alert",
    "dashboard",
    "runbook",
    "on-call",
    "engineer",
    "team",
    "service",
    "client",
    "server",
    "load",
    "balancer",
    "health",
    "check",
    "capacity",
    "headroom",
    "limit",
    "quota",
    "burst",
    "spike",
    "slowly",
    "quickly",
    "suddenly",
    "eventually",
    "never",
    "always",
    "only",
    "still",
    "again",
    "instead",
    "nobody",
    "noticed",
    "expected",
    "measured",
    "doubled",
    "dropped",
    "stalled",
    "recovered",
    "failed",
    "held",
    "released",
    "grew",
    "shrank",
];

const TITLE_WORDS: &[&str] = &[
    "Connection",
    "Pool",
    "Exhaustion",
    "Retry",
    "Storm",
    "Cache",
    "Stampede",
    "Clock",
    "Skew",
    "Lease",
    "Leader",
    "Election",
    "Schema",
    "Migration",
    "Hot",
    "Table",
    "Vacuum",
    "Wraparound",
    "Token",
    "Leak",
    "GPU",
    "Cold",
    "Start",
    "Queue",
    "Backlog",
    "Tail",
    "Latency",
    "Fan-out",
    "Split",
    "Brain",
    "Replica",
    "Lag",
    "Index",
    "Bloat",
    "Deadlock",
    "Thundering",
    "Herd",
];

fn sentence(rng: &mut Rng) -> String {
    let n = 8 + rng.below(14);
    let mut s = String::new();
    for i in 0..n {
        let w = rng.pick(WORDS);
        if i == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push(' ');
            if rng.below(12) == 0 {
                let _ = write!(s, "`{w}`");
            } else if rng.below(25) == 0 {
                let _ = write!(s, "*{w}*");
            } else {
                s.push_str(w);
            }
        }
    }
    s.push('.');
    s
}

fn paragraph(rng: &mut Rng) -> String {
    let n = 3 + rng.below(4);
    (0..n).map(|_| sentence(rng)).collect::<Vec<_>>().join(" ")
}

fn study(i: usize, rng: &mut Rng) -> (String, String) {
    let title_len = 3 + rng.below(4);
    let title: Vec<&str> = (0..title_len).map(|_| rng.pick(TITLE_WORDS)).collect();
    let title = title.join(" ");
    let slug = format!(
        "{}-{i:05}",
        title
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            .split('-')
            .filter(|s| !s.is_empty())
            .take(4)
            .collect::<Vec<_>>()
            .join("-")
    );
    // Spread over 2015..2026, one every ~9.5 hours, with jitter.
    let base = Utc.with_ymd_and_hms(2015, 1, 1, 0, 0, 0).unwrap();
    let published = base + chrono::Duration::minutes(i as i64 * 570 + rng.below(300) as i64);
    let year = published.format("%Y");
    let c1 = rng.below(CATEGORIES.len());
    let mut cats = vec![CATEGORIES[c1].0];
    if rng.below(2) == 0 {
        let c2 = (c1 + 1 + rng.below(CATEGORIES.len() - 1)) % CATEGORIES.len();
        cats.push(CATEGORIES[c2].0);
    }
    let tags: Vec<&str> = (0..1 + rng.below(4)).map(|_| rng.pick(WORDS)).collect();

    let mut t = String::with_capacity(4600);
    let _ = writeln!(t, "---");
    let _ = writeln!(t, "title: \"{title}\"");
    let _ = writeln!(t, "date: {}", published.format("%Y-%m-%dT%H:%M:%SZ"));
    if rng.below(3) == 0 {
        let lastmod = published + chrono::Duration::days(1 + rng.below(60) as i64);
        let _ = writeln!(t, "lastmod: {}", lastmod.format("%Y-%m-%dT%H:%M:%SZ"));
    }
    let _ = writeln!(t, "slug: {slug}");
    if rng.below(2) == 0 {
        let _ = writeln!(t, "summary: \"{}\"", sentence(rng));
    }
    let _ = writeln!(t, "categories: [{}]", cats.join(", "));
    let _ = writeln!(t, "tags: [{}]", tags.join(", "));
    let _ = writeln!(t, "author: \"Author {}\"", rng.below(40));
    let _ = writeln!(t, "---\n");

    let _ = writeln!(
        t,
        "## Summary\n\n{}\n\n{}\n",
        paragraph(rng),
        paragraph(rng)
    );
    let _ = writeln!(t, "## Root cause\n\n{}\n", paragraph(rng));
    for _ in 0..4 {
        let _ = writeln!(t, "- {}", sentence(rng));
    }
    let _ = writeln!(t, "\n```toml\n[pool]\nmax_connections = {}\nacquire_timeout = \"{}s\"\nretry_attempts = {}\n# {}\n```\n",
        10 + rng.below(90), 1 + rng.below(30), 1 + rng.below(5), sentence(rng));
    let _ = writeln!(
        t,
        "![Queue depth during the incident](images/{slug}.svg)\n\n{}\n",
        paragraph(rng)
    );
    let _ = writeln!(t, "## What we changed\n");
    for n in 1..=3 {
        let _ = writeln!(t, "{n}. {}", sentence(rng));
    }
    let other = rng.below(STUDIES);
    let _ = writeln!(
        t,
        "\nSee also [a related case](../case-{other:05}/) and the [runbook](https://runbooks.example.com/{slug}).\n"
    );
    while t.len() < 4000 {
        let _ = writeln!(t, "{}\n", paragraph(rng));
    }
    (format!("{year}/{slug}.md"), t)
}

// ---------------------------------------------------------------------------
// Running a child and measuring it.

pub struct Run {
    pub wall: Duration,
    /// User + system CPU time of the child.
    pub cpu: Duration,
    /// Peak resident set of the child, KiB: the last VmHWM read from
    /// /proc/PID/status while it ran (polled every 10 ms). Not wait4's
    /// ru_maxrss: Linux carries the parent's high-water mark across
    /// fork + exec into it, so it reports the benchmark's own size.
    pub max_rss_kb: i64,
}

/// Spawns `cmd`, reaps it with `wait4` for its own rusage, and panics on failure.
pub fn run_child(cmd: &mut Command, log: &Path) -> Run {
    let log_file = std::fs::File::create(log).expect("log file");
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let watcher = std::thread::spawn(move || {
        let mut peak = 0i64;
        loop {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                break;
            };
            let Some(hwm) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) else {
                break;
            };
            peak = peak.max(
                hwm.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0),
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped (std never waits on its own).
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(
        ok,
        "{cmd:?} failed (status {status}): {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Run {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kb: watcher.join().unwrap_or(0),
    }
}

/// CPU time of process `pid` from `/proc/PID/stat`: its own user + system
/// time, and with `reaped` also that of its children it has waited for.
/// None once the process is gone.
pub fn proc_cpu(pid: u32, reaped: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields from the third on follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime, stime, cutime, cstime are fields 14–17, here 11–14 counted from 0 at field 3.
    let ticks = fields[11] + fields[12] + if reaped { fields[13] + fields[14] } else { 0 };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / per_second))
}
