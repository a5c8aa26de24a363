//! Editions with `local_time = true`: a daily 07:00 digest fired in each
//! subscriber's own time zone. A simulated week (an injected clock driving
//! the scheduler the way the daemon's loop does) across seven zones, among
//! them half-hour offsets and New York's spring-forward day; one catch-up
//! per zone after downtime; subscribers who move between zones; a run a
//! crash left unfinished. Each test runs on SQLite and PostgreSQL.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use casewire::content::{Catalog, DirectoryStore};
use casewire::editions::scheduler::Scheduler;
use casewire::publisher::Snapshot;
use casewire::store::ledger::Ledger;
use casewire::store::subscribers::Status;
use casewire::store::Db;
use casewire::subscribers::SignUp;
use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use support::{prepare, study, AppOptions, Engine, TestSite, BASE_URL};

const EDITIONS: &str = r#"
[[editions]]
slug = "morning"
name = "Morning digest"
schedule = "0 7 * * *"
timezone = "Europe/Berlin"
local_time = true
max_items = 50
"#;

/// One subscriber per zone; "nobody@" chose none and gets Berlin's 07:00.
const READERS: [(&str, &str); 8] = [
    ("tokyo@example.com", "Asia/Tokyo"),
    ("kolkata@example.com", "Asia/Kolkata"),
    ("adelaide@example.com", "Australia/Adelaide"),
    ("berlin@example.com", "Europe/Berlin"),
    ("nobody@example.com", ""),
    ("london@example.com", "Europe/London"),
    ("newyork@example.com", "America/New_York"),
    ("la@example.com", "America/Los_Angeles"),
];

/// A digest as queued: recipient, window key, when it was queued, and the
/// case studies it links to.
#[derive(Debug, Clone)]
struct Digest {
    to: String,
    window: String,
    queued_at: DateTime<Utc>,
    slugs: Vec<String>,
}

/// A database, settings with the `morning` edition, a content folder that
/// is published through the real ledger, and a scheduler whose clock is
/// the `now` each `tick` is given. The whole set-up of this file.
struct World {
    db: Db,
    settings: casewire::config::Settings,
    ledger: Ledger,
    catalog: Catalog,
    snapshot: tokio::sync::watch::Sender<Arc<Snapshot>>,
    scheduler: Scheduler,
    /// Case studies written so far, with the simulated time of each.
    published: Vec<(String, DateTime<Utc>)>,
    _site: TestSite,
}

async fn world(engine: Engine) -> World {
    let site = prepare(AppOptions::new(engine).editions(EDITIONS));
    let s = site.settings().clone();
    let db = Db::open(&site.db.url).await.unwrap();
    let mut ledger = Ledger::load(db.clone()).await.unwrap();
    ledger.sync(&Catalog::default(), Utc::now()).await.unwrap();
    let snapshot = |catalog: &Catalog| {
        Arc::new(Snapshot {
            settings: Arc::new(s.clone()),
            catalog: Arc::new(catalog.clone()),
            feeds: Arc::default(),
            built_at: Utc::now(),
        })
    };
    let (tx, rx) = tokio::sync::watch::channel(snapshot(&Catalog::default()));
    World {
        scheduler: Scheduler {
            db: db.clone(),
            snapshot: rx,
            signals: Default::default(),
        },
        db,
        settings: s,
        ledger,
        catalog: Catalog::default(),
        snapshot: tx,
        published: Vec::new(),
        _site: site,
    }
}

impl World {
    /// Publishes a new case study at simulated time `at` (a new publication event).
    async fn publish(&mut self, slug: &str, at: DateTime<Utc>) {
        let path = self.settings.content.dir.join(format!("{slug}.md"));
        std::fs::write(
            path,
            study(
                &format!("Title {slug}"),
                slug,
                "2025-03-01T00:00:00Z",
                &["databases"],
            ),
        )
        .unwrap();
        let catalog = DirectoryStore::new(&self.settings).scan(None);
        assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
        self.ledger.sync(&catalog, Utc::now()).await.unwrap();
        self.catalog = catalog.clone();
        self.snapshot.send_replace(Arc::new(Snapshot {
            settings: Arc::new(self.settings.clone()),
            catalog: Arc::new(catalog),
            feeds: Arc::default(),
            built_at: Utc::now(),
        }));
        self.published.push((slug.to_owned(), at));
    }

    /// A confirmed subscriber of `morning` in `zone` ("" for none), added
    /// through the same service as the CLI and the admin API.
    async fn reader(&self, email: &str, zone: &str) {
        casewire::subscribers::add(
            &self.settings,
            &self.db,
            &SignUp {
                email: email.into(),
                editions: vec!["morning".into()],
                timezone: zone.into(),
                ..Default::default()
            },
            Status::Confirmed,
            "test",
            Utc::now(),
        )
        .await
        .unwrap();
    }

    async fn move_to(&self, email: &str, zone: &str) {
        casewire::subscribers::set_timezone(&self.db, email, Some(zone))
            .await
            .unwrap();
    }

    /// Drives the scheduler from `from` to `until` as the daemon's loop
    /// does: tick, then wake at the next fire time it names or after an
    /// hour at most. Publishes a case study every three hours of the
    /// simulated clock, before the tick of the same instant.
    async fn simulate(&mut self, from: DateTime<Utc>, until: DateTime<Utc>) {
        let mut t = from;
        let mut next_publication = from;
        while t <= until {
            while next_publication <= t {
                let slug = format!("study-{}", next_publication.format("%m%d-%H%M"));
                self.publish(&slug, next_publication).await;
                next_publication += Duration::hours(3);
            }
            let next = self
                .scheduler
                .tick(t)
                .await
                .unwrap()
                .expect("a cron edition always has a next fire time");
            assert!(
                next > t,
                "the next fire time {next} is after the tick at {t}"
            );
            t = next.min(t + Duration::hours(1)).min(next_publication);
        }
    }

    /// Every queued digest of `morning`, by recipient, oldest first.
    async fn digests(&self) -> BTreeMap<String, Vec<Digest>> {
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT o.recipient, o.dedupe_key, o.created_at, b.text FROM outbox o
             JOIN outbox_bodies b ON b.id = o.body_id
             WHERE o.edition = 'morning' ORDER BY o.recipient, o.created_at, o.id",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        let mut out: BTreeMap<String, Vec<Digest>> = BTreeMap::new();
        for (to, key, at, text) in rows {
            let window = key
                .strip_prefix("digest:morning:")
                .and_then(|k| k.rsplit_once(':'))
                .map(|(w, _)| w.to_owned())
                .unwrap_or_else(|| panic!("unexpected dedupe key {key}"));
            let slugs = text
                .lines()
                .filter_map(|l| l.split_once(&format!("{BASE_URL}case-studies/")))
                .map(|(_, rest)| rest.trim().trim_end_matches('/').to_owned())
                .collect();
            out.entry(to.clone()).or_default().push(Digest {
                to,
                window,
                queued_at: Utc.timestamp_millis_opt(at).unwrap(),
                slugs,
            });
        }
        out
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// 07:00 local in `zone` on every local day, as instants in `(from, until]`,
/// computed from the tz database directly (not with casewire's schedules).
fn seven_oclocks(zone: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut day = from.with_timezone(&zone).date_naive() - Duration::days(1);
    let mut out = Vec::new();
    while day <= until.with_timezone(&zone).date_naive() + Duration::days(1) {
        let local = day.and_time(NaiveTime::from_hms_opt(7, 0, 0).unwrap());
        let t = zone
            .from_local_datetime(&local)
            .single()
            .expect("07:00 is never skipped or repeated in these zones")
            .with_timezone(&Utc);
        if t > from && t <= until {
            out.push(t);
        }
        day += Duration::days(1);
    }
    out
}

fn zone_of(email: &str) -> Tz {
    let zone = READERS.iter().find(|(e, _)| *e == email).unwrap().1;
    if zone.is_empty() {
        chrono_tz::Europe::Berlin
    } else {
        zone.parse().unwrap()
    }
}

/// Each reader's case studies over all their digests: each exactly once,
/// and every one published up to their last digest.
fn assert_each_case_study_once(w: &World, digests: &[Digest]) {
    let all: Vec<&String> = digests.iter().flat_map(|d| &d.slugs).collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        unique.len(),
        "{}: a case study came twice",
        digests[0].to
    );
    let last = digests.last().unwrap().queued_at;
    let expected: BTreeSet<&String> = w
        .published
        .iter()
        .filter(|(_, at)| *at <= last)
        .map(|(slug, _)| slug)
        .collect();
    assert_eq!(
        unique, expected,
        "{}: not every case study arrived",
        digests[0].to
    );
}

async fn a_week_of_local_mornings_in_eight_zones(engine: Engine) {
    let mut w = world(engine).await;
    for (email, zone) in READERS {
        w.reader(email, zone).await;
    }
    // Thursday 2026-03-05 to Thursday 2026-03-12: New York and Los Angeles
    // spring forward on Sunday 2026-03-08, Berlin and London do not (they
    // change on the 29th); Adelaide is on summer time (+10:30) all week,
    // Kolkata is +05:30 without daylight saving.
    let from = utc("2026-03-05T00:00:00Z");
    let until = utc("2026-03-12T00:00:00Z");
    w.simulate(from, until).await;
    let got = w.digests().await;

    assert_eq!(
        got.len(),
        READERS.len(),
        "everyone got digests: {:?}",
        got.keys()
    );
    for (email, zone_name) in READERS {
        let zone = zone_of(email);
        let digests = &got[email];
        let fired: Vec<DateTime<Utc>> = digests.iter().map(|d| d.queued_at).collect();
        assert_eq!(
            fired,
            seven_oclocks(zone, from, until),
            "{email}: one digest at each local 07:00, queued right then"
        );
        for d in digests {
            let local = d.queued_at.with_timezone(&zone);
            assert_eq!(
                local.format("%H:%M").to_string(),
                "07:00",
                "{email}: {local}"
            );
            // The window is that zone's own (the edition's zone keeps plain keys).
            let suffix = if zone == chrono_tz::Europe::Berlin {
                String::new()
            } else {
                format!("@{zone_name}")
            };
            assert_eq!(
                d.window,
                format!("cron:{}{suffix}", d.queued_at.format("%Y-%m-%dT%H:%M:%SZ")),
                "{email}"
            );
            assert!(!d.slugs.is_empty(), "{email}: no empty digest");
        }
        assert_each_case_study_once(&w, digests);
    }
    // New York's mornings move by an hour in UTC on its DST day, Berlin's do not.
    let ny: Vec<String> = got["newyork@example.com"]
        .iter()
        .map(|d| d.queued_at.format("%m-%d %H:%M").to_string())
        .collect();
    assert!(
        ny.contains(&"03-07 12:00".to_owned()) && ny.contains(&"03-08 11:00".to_owned()),
        "{ny:?}"
    );
    let berlin: BTreeSet<String> = got["berlin@example.com"]
        .iter()
        .map(|d| d.queued_at.format("%H:%M").to_string())
        .collect();
    assert_eq!(berlin, BTreeSet::from(["06:00".to_owned()]));
    let kolkata: BTreeSet<String> = got["kolkata@example.com"]
        .iter()
        .map(|d| d.queued_at.format("%H:%M").to_string())
        .collect();
    assert_eq!(
        kolkata,
        BTreeSet::from(["01:30".to_owned()]),
        "half-hour offset"
    );

    // Ticking again at the same instant queues nothing more.
    let total: usize = got.values().map(Vec::len).sum();
    w.scheduler.tick(until).await.unwrap();
    let again: usize = w.digests().await.values().map(Vec::len).sum();
    assert_eq!(again, total);

    // Down for three and a half days, with one case study published
    // meanwhile: each zone catches up once (its latest missed morning), not
    // once per missed morning.
    let back = utc("2026-03-15T12:00:00Z");
    w.publish("during-downtime", back - Duration::days(1)).await;
    w.scheduler.tick(back).await.unwrap();
    let after = w.digests().await;
    for (email, _) in READERS {
        let zone = zone_of(email);
        let new: Vec<&Digest> = after[email].iter().skip(got[email].len()).collect();
        assert_eq!(new.len(), 1, "{email}: one catch-up: {new:?}");
        let latest = *seven_oclocks(zone, until, back).last().unwrap();
        assert!(
            new[0]
                .window
                .starts_with(&format!("cron:{}", latest.format("%Y-%m-%dT%H:%M:%SZ"))),
            "{email}: {}",
            new[0].window
        );
        assert!(
            new[0].slugs.contains(&"during-downtime".to_owned()),
            "{email}"
        );
        assert_each_case_study_once(&w, &after[email]);
    }
    w.scheduler.tick(back + Duration::minutes(5)).await.unwrap();
    let settled: usize = w.digests().await.values().map(Vec::len).sum();
    assert_eq!(settled, total + READERS.len(), "no second catch-up");
}
on_both_engines!(
    local_time_week_one_digest_per_zone_morning,
    a_week_of_local_mornings_in_eight_zones
);

/// Moving between zones never brings two digests in one period of the new
/// zone, never lets one of its periods pass without one, and loses no case
/// study.
async fn moving_between_zones_keeps_one_digest_per_period(engine: Engine) {
    let mut w = world(engine).await;
    w.reader("east@example.com", "Asia/Kolkata").await;
    w.reader("west@example.com", "Europe/Berlin").await;
    w.reader("stays@example.com", "Europe/Berlin").await;
    let from = utc("2026-03-05T00:00:00Z");
    // Friday 03:00 UTC: Kolkata's 07:00 (01:30 UTC) has fired, Berlin's (06:00 UTC) not yet.
    let moment = utc("2026-03-06T03:00:00Z");
    w.simulate(from, moment).await;
    let before = w.digests().await;
    assert_eq!(
        before["east@example.com"].last().unwrap().queued_at,
        utc("2026-03-06T01:30:00Z")
    );
    assert_eq!(
        before["west@example.com"].last().unwrap().queued_at,
        utc("2026-03-05T06:00:00Z")
    );

    w.move_to("east@example.com", "Europe/Berlin").await;
    w.move_to("west@example.com", "Asia/Kolkata").await;
    let until = utc("2026-03-09T00:00:00Z");
    w.simulate(moment + Duration::minutes(1), until).await;
    let got = w.digests().await;
    let times =
        |email: &str| -> Vec<DateTime<Utc>> { got[email].iter().map(|d| d.queued_at).collect() };
    // East got Kolkata's Friday morning; Berlin's Friday 07:00 falls into
    // the same Berlin period, so it waits for Saturday.
    assert_eq!(
        times("east@example.com"),
        [
            utc("2026-03-05T01:30:00Z"),
            utc("2026-03-06T01:30:00Z"),
            utc("2026-03-07T06:00:00Z"),
            utc("2026-03-08T06:00:00Z"),
        ]
    );
    // West's last Berlin digest (Thursday 07:00) lies in Kolkata's period
    // that ended on Friday 07:00 IST; Saturday's Kolkata morning sends.
    assert_eq!(
        times("west@example.com"),
        [
            utc("2026-03-05T06:00:00Z"),
            utc("2026-03-07T01:30:00Z"),
            utc("2026-03-08T01:30:00Z"),
        ]
    );
    assert_eq!(
        times("stays@example.com"),
        seven_oclocks(chrono_tz::Europe::Berlin, from, until)
    );
    // Nothing twice, nothing lost: what waited arrives in the next digest.
    for email in ["east@example.com", "west@example.com", "stays@example.com"] {
        assert_each_case_study_once(&w, &got[email]);
    }
    // Judged in the new zone, each of its periods holds exactly one digest,
    // also the one the move fell into.
    let zone = |email: &str| -> Tz {
        if email == "east@example.com" {
            chrono_tz::Europe::Berlin
        } else {
            chrono_tz::Asia::Kolkata
        }
    };
    for email in ["east@example.com", "west@example.com"] {
        let edges = seven_oclocks(zone(email), from, until);
        for pair in edges.windows(2) {
            let n = times(email)
                .iter()
                .filter(|t| **t > pair[0] && **t <= pair[1])
                .count();
            assert_eq!(
                n, 1,
                "{email}: the period ({}, {}] holds {n} digests",
                pair[0], pair[1]
            );
        }
    }
}
on_both_engines!(
    local_time_zone_move_never_doubles_or_drops_a_period,
    moving_between_zones_keeps_one_digest_per_period
);

/// A run that started (its window and high-water mark stored) and then
/// died is resumed at the next tick with the same window and the same
/// high-water mark; once finished, it is not run again.
async fn a_crashed_zone_run_resumes_once(engine: Engine) {
    let mut w = world(engine).await;
    w.reader("tokyo@example.com", "Asia/Tokyo").await;
    w.reader("berlin@example.com", "Europe/Berlin").await;
    // After Berlin's Thursday morning (06:00 UTC).
    let from = utc("2026-03-05T07:00:00Z");
    w.scheduler.tick(from).await.unwrap();
    w.publish("before-the-crash", from).await;
    // Tokyo's 07:00 on Friday is 22:00 UTC on Thursday: the run starts and
    // the process dies before its first batch commits.
    let fired = utc("2026-03-05T22:00:00Z");
    let key = "cron:2026-03-05T22:00:00Z@Asia/Tokyo";
    let high_water = casewire::store::editions::current_high_water(&w.db)
        .await
        .unwrap();
    let state = casewire::store::editions::start_run(
        &w.db,
        "morning",
        key,
        "Asia/Tokyo",
        fired,
        high_water,
    )
    .await
    .unwrap();
    assert!(!state.finished);
    w.publish("after-the-crash", fired).await;

    // Back ten minutes later: Tokyo's window is resumed, covering what it
    // covered when it started; Berlin's morning is not due yet.
    w.scheduler
        .tick(fired + Duration::minutes(10))
        .await
        .unwrap();
    let got = w.digests().await;
    assert_eq!(got.len(), 1, "{got:?}");
    let tokyo = &got["tokyo@example.com"];
    assert_eq!(tokyo.len(), 1);
    assert_eq!(tokyo[0].window, key);
    assert_eq!(tokyo[0].slugs, ["before-the-crash"]);
    let finished: Option<i64> = sqlx::query_scalar(
        "SELECT finished_at FROM edition_runs WHERE edition = 'morning' AND window_key = $1",
    )
    .bind(key)
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert!(finished.is_some());
    w.scheduler
        .tick(fired + Duration::minutes(20))
        .await
        .unwrap();
    assert_eq!(
        w.digests().await["tokyo@example.com"].len(),
        1,
        "not run again"
    );

    // The next morning carries what the resumed run did not; Berlin gets both.
    w.scheduler.tick(utc("2026-03-06T06:00:00Z")).await.unwrap();
    w.scheduler.tick(utc("2026-03-06T22:00:00Z")).await.unwrap();
    let got = w.digests().await;
    assert_eq!(got["berlin@example.com"].len(), 1);
    let mut berlin = got["berlin@example.com"][0].slugs.clone();
    berlin.sort();
    assert_eq!(berlin, ["after-the-crash", "before-the-crash"]);
    let tokyo = &got["tokyo@example.com"];
    assert_eq!(tokyo.len(), 2);
    assert_eq!(tokyo[1].slugs, ["after-the-crash"]);
    assert_eq!(tokyo[1].window, "cron:2026-03-06T22:00:00Z@Asia/Tokyo");
}
on_both_engines!(
    local_time_crashed_run_resumes_with_its_window,
    a_crashed_zone_run_resumes_once
);

/// A zone that nobody used for a while and that comes back into use starts
/// again at its next local morning, like a new edition: no late digest for
/// a window that fired while the zone was empty.
async fn a_zone_back_in_use_waits_for_its_next_morning(engine: Engine) {
    let mut w = world(engine).await;
    w.reader("tokyo@example.com", "Asia/Tokyo").await;
    w.reader("berlin@example.com", "Europe/Berlin").await;
    let from = utc("2026-03-05T00:00:00Z");
    w.simulate(from, utc("2026-03-06T00:00:00Z")).await;
    // Tokyo's only reader moves away; Tokyo has no one for two days.
    w.move_to("tokyo@example.com", "Europe/Berlin").await;
    let back = utc("2026-03-08T00:00:00Z");
    w.simulate(utc("2026-03-06T00:01:00Z"), back).await;
    // Someone new signs up in Tokyo after Tokyo's Sunday 07:00 (Saturday 22:00 UTC).
    w.reader("new@example.com", "Asia/Tokyo").await;
    w.simulate(back + Duration::minutes(1), utc("2026-03-09T00:00:00Z"))
        .await;
    let got = w.digests().await;
    let new: Vec<(DateTime<Utc>, &str)> = got["new@example.com"]
        .iter()
        .map(|d| (d.queued_at, d.window.as_str()))
        .collect();
    assert_eq!(
        new,
        [(
            utc("2026-03-08T22:00:00Z"),
            "cron:2026-03-08T22:00:00Z@Asia/Tokyo"
        )],
        "the first digest at Tokyo's next 07:00, not a late one for the window of 2026-03-07T22:00Z"
    );
    assert_eq!(
        got["tokyo@example.com"]
            .iter()
            .map(|d| d.queued_at)
            .collect::<Vec<_>>(),
        [
            // Tokyo's Friday 07:00 lies in Berlin's Friday period: held back then.
            utc("2026-03-05T22:00:00Z"),
            utc("2026-03-07T06:00:00Z"),
            utc("2026-03-08T06:00:00Z"),
        ]
    );
}
on_both_engines!(
    local_time_zone_back_in_use_starts_at_its_next_morning,
    a_zone_back_in_use_waits_for_its_next_morning
);
