//! `cargo bench --bench feeds_build`: how long `casewire feeds build` takes on
//! a store of 10,000 case studies (about 40 MB of Markdown), its peak memory,
//! how long an incremental rebuild after one edited file takes, and (when
//! `hugo` is installed) how Hugo compares building RSS for the same files,
//! beside the time it takes merely to read every file once. Prints figures;
//! never asserts timing.
//!
//! Targets: cold build 20x faster than Hugo in the same run and <= 64 MB
//! peak RSS; one-file rebuild < 20 ms.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use casewire::config::Settings;
use casewire::content::DirectoryStore;
use casewire::feeds::{self, output};
use chrono::Utc;

#[path = "corpus/mod.rs"]
mod corpus;
use corpus::{ensure_store, run_child, Run, STUDIES};

const RUNS: usize = 5;
const EDITS: usize = 50;

fn main() {
    let casewire = PathBuf::from(env!("CARGO_BIN_EXE_casewire"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/feeds_build");
    let content = root.join("content");
    let t = Instant::now();
    let (generated, bytes) = ensure_store(&root, &content);
    println!(
        "content store: {} ({STUDIES} case studies, {:.1} MB){}",
        content.display(),
        bytes as f64 / 1e6,
        if generated {
            format!(", generated in {:.1?}", t.elapsed())
        } else {
            ", reused".into()
        }
    );
    let config = root.join("casewire.toml");
    let out = root.join("out");
    if std::env::var_os("FEEDS_BENCH_ONLY").is_some_and(|v| v == "incremental") {
        // For profilers (valgrind --tool=callgrind): the in-process part only.
        incremental(&config);
        return;
    }

    // 1. The command, as an operator runs it: a fresh output folder each time.
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_dir_all(&out);
        runs.push(run_child(
            Command::new(&casewire)
                .arg("--config")
                .arg(&config)
                .args(["feeds", "build", "--out"])
                .arg(&out)
                .env("RUST_LOG", "warn"),
            &root.join("casewire.log"),
        ));
    }
    let log = std::fs::read_to_string(root.join("casewire.log")).unwrap_or_default();
    println!("casewire says: {}", log.lines().last().unwrap_or("").trim());

    // 2. The daemon's fast path, in process: one file changes.
    let inc = incremental(&config);

    // 3. Hugo on the same files, RSS only.
    let hugo = hugo_runs(&root, &content);

    // 4. The floor under any build of these files: reading each once, and
    // writing what the build wrote, its bytes already in memory.
    let floor = read_floor(&content);
    let write_floor = write_floor(&out, &root.join("out-again"));

    let mut table = String::new();
    let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    let cpus: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
    let peak = runs.iter().map(|r| r.max_rss_kb).max().unwrap_or(0);
    let line = "-".repeat(100);
    let _ = writeln!(table, "\n{line}");
    let _ = writeln!(
        table,
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>11}",
        format!("{STUDIES} case studies"),
        "first",
        "best",
        "median",
        "CPU med",
        "peak RSS"
    );
    let _ = writeln!(table, "{line}");
    let _ = writeln!(
        table,
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>8.1} MB   target 20x hugo, <= 64 MB",
        format!("casewire feeds build (child, {RUNS} runs)"),
        secs(runs[0].wall),
        secs(min(&walls)),
        secs(median(&walls)),
        secs(median(&cpus)),
        peak as f64 / 1024.0
    );
    let _ = writeln!(
        table,
        "{:<40} {:>10}",
        "scan + build + write, in process",
        secs(inc.scan)
    );
    let _ = writeln!(
        table,
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>11}   target < 20 ms",
        format!("rebuild after 1 edit ({EDITS} edits)"),
        "",
        format!("p95 {}", ms(inc.p95)),
        ms(inc.median),
        ms(inc.cpu_median),
        ""
    );
    let _ = writeln!(
        table,
        "{:<40} {:>10} {:>10} {:>10} {:>10}",
        "",
        "",
        "",
        "",
        format!("p95 {}", ms(inc.cpu_p95))
    );
    match &hugo {
        Ok(h) => {
            let hw: Vec<Duration> = h.iter().map(|r| r.wall).collect();
            let hc: Vec<Duration> = h.iter().map(|r| r.cpu).collect();
            let hpeak = h.iter().map(|r| r.max_rss_kb).max().unwrap_or(0);
            let _ = writeln!(
                table,
                "{:<40} {:>10} {:>10} {:>10} {:>10} {:>8.1} MB",
                format!("hugo, RSS only ({RUNS} runs)"),
                secs(h[0].wall),
                secs(min(&hw)),
                secs(median(&hw)),
                secs(median(&hc)),
                hpeak as f64 / 1024.0
            );
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            let budget = median(&hw) / 20;
            let _ = writeln!(
                table,
                "{:<40} {:>10} {:>10} {:>10} {:>10}",
                "20x hugo: a build may take at most",
                "",
                "",
                secs(budget),
                ""
            );
            table.push_str(&floor.row("read all {files} files once", Some(budget)));
            table.push_str(&write_floor.row("write its {files} files again", Some(budget)));
            let _ = writeln!(
                table,
                "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10.1}x",
                "hugo / casewire",
                "",
                format!("{:.1}x", ratio(min(&hw), min(&walls))),
                format!("{:.1}x", ratio(median(&hw), median(&walls))),
                format!("{:.1}x", ratio(median(&hc), median(&cpus))),
                hpeak as f64 / peak.max(1) as f64
            );
        }
        Err(why) => {
            let _ = writeln!(table, "hugo comparison skipped: {why}");
            table.push_str(&floor.row("read all {files} files once", None));
            table.push_str(&write_floor.row("write its {files} files again", None));
        }
    }
    let _ = writeln!(table, "{line}");
    let (load, _) = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_once(' ')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap_or_default();
    let _ = writeln!(
        table,
        "load average during the run: {load} on {} cores (wall times grow with it; CPU times much less)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("{table}");
}

/// Reading every content file once (or writing every output file once), on
/// as many threads as there are cores, with nothing else done: what no
/// build of the store (or no build with this output) can beat.
struct Floor {
    files: usize,
    best: Duration,
    median: Duration,
    /// Median CPU time of the process during a round (all threads).
    cpu: Duration,
}

impl Floor {
    /// The table's row for this floor: `what` it measured (`{files}` stands
    /// for the count), with its share of `budget` when there is one.
    fn row(&self, what: &str, budget: Option<Duration>) -> String {
        let share = budget.map_or(String::new(), |b| {
            format!(
                "   {:.0}% of that budget",
                100.0 * self.median.as_secs_f64() / b.as_secs_f64().max(1e-9)
            )
        });
        format!(
            "{:<40} {:>10} {:>10} {:>10} {:>10}{share}\n",
            what.replace("{files}", &self.files.to_string()),
            "",
            secs(self.best),
            secs(self.median),
            secs(self.cpu)
        )
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect()
}

/// Runs `each` over `items` split among one thread a core, [`RUNS`] times
/// (`before` first, untimed, each time).
fn on_every_core<T: Sync>(items: &[T], before: impl Fn(), each: impl Fn(&T) + Sync) -> Floor {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        before();
        let (t, c) = (Instant::now(), cpu_time());
        std::thread::scope(|scope| {
            for part in items.chunks(items.len().div_ceil(threads).max(1)) {
                let each = &each;
                scope.spawn(move || part.iter().for_each(each));
            }
        });
        walls.push(t.elapsed());
        cpus.push(cpu_time() - c);
    }
    Floor {
        files: items.len(),
        best: min(&walls),
        median: median(&walls),
        cpu: median(&cpus),
    }
}

fn read_floor(content: &Path) -> Floor {
    on_every_core(
        &files_below(content),
        || {},
        |p| {
            std::fs::read(p).expect("read a content file");
        },
    )
}

/// Writes the files of `out` below `again`, each to a new file (as a cold
/// build does), their bytes read into memory beforehand.
fn write_floor(out: &Path, again: &Path) -> Floor {
    let files: Vec<(PathBuf, Vec<u8>)> = files_below(out)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read an output file");
            (again.join(p.strip_prefix(out).expect("below out")), bytes)
        })
        .collect();
    let folders: std::collections::BTreeSet<&Path> =
        files.iter().filter_map(|(p, _)| p.parent()).collect();
    let floor = on_every_core(
        &files,
        || {
            let _ = std::fs::remove_dir_all(again);
            for f in &folders {
                std::fs::create_dir_all(f).expect("output folders");
            }
        },
        |(path, bytes)| std::fs::write(path, bytes).expect("write an output file"),
    );
    let _ = std::fs::remove_dir_all(again);
    floor
}

fn min(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn median(v: &[Duration]) -> Duration {
    percentile(v, 50.0)
}

/// Nearest-rank percentile.
fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------
// The incremental path, in process.

fn incremental(config: &Path) -> Incremental {
    let text = std::fs::read_to_string(config).expect("config");
    let settings = Settings::from_toml(config, &text, std::iter::empty()).expect("config loads");
    let out = config.parent().unwrap().join("out-incremental");
    let _ = std::fs::remove_dir_all(&out);
    let now = Utc::now();
    let started = Instant::now();
    let store = DirectoryStore::new(&settings);
    let mut catalog = store.scan(None);
    let files = feeds::build_all(&settings, &catalog, now);
    output::write_all(&out, &files).expect("write feeds");
    let scan_time = started.elapsed();
    // What the daemon serves from, and renders archive pages against.
    let (mut cache, _) = feeds::cache::FeedCache::default().with(&files, now, None);
    drop(files);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);

    // Edit recent studies (they are in the feeds, so every edit changes output).
    let paths: Vec<PathBuf> = catalog
        .all()
        .iter()
        .take(EDITS)
        .filter_map(|s| s.path().map(Path::to_path_buf))
        .collect();
    let mut originals = Vec::new();
    let mut times = Vec::new();
    let mut phases: [Vec<Duration>; 4] = Default::default();
    let mut cpu_phases: [Vec<Duration>; 4] = Default::default();
    let mut cpu = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let original = std::fs::read_to_string(path).expect("read study");
        let edited = original.replacen(
            "\n## Summary\n\n",
            &format!("\n## Summary\n\nEdited in benchmark round {i}.\n\n"),
            1,
        );
        std::fs::write(path, &edited).expect("edit study");
        originals.push((path.clone(), original));

        let t = Instant::now();
        let c0 = cpu_time();
        let next = store.update(&catalog, std::slice::from_ref(path));
        let (t_update, c_update) = (t.elapsed(), cpu_time());
        let scopes = feeds::affected_scopes(&settings, &catalog, &next, now, now);
        let (t_scopes, c_scopes) = (t.elapsed(), cpu_time());
        // As the daemon does (`publisher.rs`): archive pages whose inputs
        // did not change are not rendered again.
        let built = feeds::build_since(&settings, &next, &scopes, now, Some(&cache));
        let (t_build, c_build) = (t.elapsed(), cpu_time());
        let report = output::write_all(&out, &built.files).expect("write feeds");
        let (mut next_cache, _) = cache.with(&built.files, now, None);
        next_cache.retire(&built.retired);
        cache = next_cache;
        let (t_write, c_write) = (t.elapsed(), cpu_time());
        times.push(t_write);
        cpu.push(c_write - c0);
        phases[0].push(t_update);
        phases[1].push(t_scopes - t_update);
        phases[2].push(t_build - t_scopes);
        phases[3].push(t_write - t_build);
        cpu_phases[0].push(c_update - c0);
        cpu_phases[1].push(c_scopes - c_update);
        cpu_phases[2].push(c_build - c_scopes);
        cpu_phases[3].push(c_write - c_build);
        assert!(report.written >= 3, "an edit must change feeds: {report:?}");
        catalog = next;
    }
    for (what, p) in [("wall", &phases), ("CPU (all threads)", &cpu_phases)] {
        println!(
            "one-file rebuild, median {what}: update {} | affected_scopes {} | build_since {} | write_all + cache {}",
            ms(median(&p[0])),
            ms(median(&p[1])),
            ms(median(&p[2])),
            ms(median(&p[3])),
        );
    }
    for (path, original) in originals {
        std::fs::write(path, original).expect("restore study");
    }
    Incremental {
        median: median(&times),
        p95: percentile(&times, 95.0),
        cpu_median: median(&cpu),
        cpu_p95: percentile(&cpu, 95.0),
        scan: scan_time,
    }
}

struct Incremental {
    median: Duration,
    p95: Duration,
    cpu_median: Duration,
    cpu_p95: Duration,
    /// Full scan + build + write in process, for reference.
    scan: Duration,
}

/// CPU time of this process, all threads: unlike wall time, it does not grow
/// when another build competes for the cores.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---------------------------------------------------------------------------
// Hugo.

fn hugo_runs(root: &Path, content: &Path) -> Result<Vec<Run>, String> {
    match Command::new("hugo").arg("version").output() {
        Ok(o) if o.status.success() => {
            println!("hugo: {}", String::from_utf8_lossy(&o.stdout).trim());
        }
        _ => return Err("`hugo` is not installed (Debian package hugo)".into()),
    }
    let site = root.join("hugo");
    std::fs::create_dir_all(&site).map_err(|e| e.to_string())?;
    let public = root.join("hugo-public");
    let config = format!(
        r#"baseURL = "https://example.com/cases/"
title = "Casewire Bench"
contentDir = {content:?}
publishDir = {public:?}
rssLimit = 50
disableKinds = ["sitemap", "robotsTXT", "404"]
enableRobotsTXT = false
buildFuture = false

[taxonomies]
category = "categories"

[outputs]
home = ["RSS"]
section = ["RSS"]
taxonomy = ["RSS"]
term = ["RSS"]
page = []
"#,
        content = content.display().to_string(),
        public = public.display().to_string(),
    );
    std::fs::write(site.join("config.toml"), config).map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_dir_all(&public);
        runs.push(run_child(
            Command::new("hugo")
                .args(["--quiet", "--source"])
                .arg(&site)
                .env("HUGO_ENVIRONMENT", "production"),
            &root.join("hugo.log"),
        ));
    }
    let rss_files = count_files(&public, "index.xml");
    println!("hugo wrote {rss_files} RSS files to {}", public.display());
    Ok(runs)
}

fn count_files(dir: &Path, name: &str) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == name)
        .count()
}
