//! The publication ledger: which case studies have been published, since
//! when, with which content. It decides what is *newly* published:
//! - the first start on an existing content store seeds it silently
//!   (DESIGN.md invariant 3: no email storm);
//! - a slug seen for the first time afterwards is announced once, as a
//!   durable event, whatever its front-matter date says;
//! - an edit changes the stored hash and announces nothing (invariant 4);
//! - an upstream source's first successful fetch seeds silently too, at
//!   first start or when the source is added later ([`Ledger::seed_source`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{to_millis, Db, StoreError};
use crate::content::{CaseStudy, Catalog};

const SEEDED_KEY: &str = "ledger_seeded_at";
/// Followed by the source's feed URL: when that source was seeded.
const SOURCE_SEEDED_PREFIX: &str = "ledger_source_seeded_at:";

/// What one sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Rows written silently by the first start.
    pub seeded: usize,
    /// Slugs announced as newly published (one event each).
    pub announced: Vec<String>,
    /// Published case studies whose content changed.
    pub edited: usize,
}

/// The ledger with an in-memory copy of each slug's hash, so a sync after a
/// one-file change costs one comparison per case study, not a table scan.
pub struct Ledger {
    db: Db,
    known: HashMap<String, String>,
    seeded: bool,
    /// Upstream sources known to be seeded, so a poll costs no query.
    sources_seeded: std::collections::HashSet<String>,
}

impl Ledger {
    pub async fn load(db: Db) -> Result<Self, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT slug, content_hash FROM publications")
                .fetch_all(&db.pool)
                .await?;
        let seeded = db.get_meta(SEEDED_KEY).await?.is_some();
        Ok(Self {
            db,
            known: rows.into_iter().collect(),
            seeded,
            sources_seeded: Default::default(),
        })
    }

    /// Records the published `entries` of an upstream source without
    /// announcing them, the first time the source is fetched successfully;
    /// does nothing for a source seeded before. Returns how many were seeded.
    pub async fn seed_source(
        &mut self,
        feed: &url::Url,
        entries: &[std::sync::Arc<CaseStudy>],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let key = format!("{SOURCE_SEEDED_PREFIX}{feed}");
        if self.sources_seeded.contains(&key) {
            return Ok(0);
        }
        if self.db.get_meta(&key).await?.is_some() {
            self.sources_seeded.insert(key);
            return Ok(0);
        }
        let mut tx = self.db.pool.begin().await?;
        let mut inserted = Vec::new();
        for study in entries.iter().filter(|s| s.is_published(now)) {
            if self.known.contains_key(study.slug.as_str()) {
                continue;
            }
            insert_publication(&mut tx, study, now, false).await?;
            inserted.push((study.slug.to_string(), study.hash.clone()));
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(&key)
            .bind(now.to_rfc3339())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.sources_seeded.insert(key);
        let seeded = inserted.len();
        self.known.extend(inserted);
        Ok(seeded)
    }

    /// Records what `catalog` shows published at `now`.
    pub async fn sync(
        &mut self,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<SyncReport, StoreError> {
        let mut report = SyncReport::default();
        let announce = self.seeded;
        let mut tx = self.db.pool.begin().await?;
        let mut inserted = Vec::new();
        for study in catalog.published(now) {
            match self.known.get(study.slug.as_str()) {
                Some(hash) if *hash == study.hash => {}
                Some(_) => {
                    sqlx::query("UPDATE publications SET title = $1, categories = $2, content_hash = $3, updated_at = $4 WHERE slug = $5")
                        .bind(&study.title)
                        .bind(categories(study))
                        .bind(&study.hash)
                        .bind(to_millis(now))
                        .bind(study.slug.as_str())
                        .execute(&mut *tx)
                        .await?;
                    inserted.push((study.slug.to_string(), study.hash.clone()));
                    report.edited += 1;
                }
                None => {
                    let rows = insert_publication(&mut tx, study, now, announce).await?;
                    inserted.push((study.slug.to_string(), study.hash.clone()));
                    if rows == 0 {
                        continue;
                    }
                    if announce {
                        sqlx::query("INSERT INTO publication_events (slug, categories, created_at) VALUES ($1, $2, $3) ON CONFLICT (slug) DO NOTHING")
                            .bind(study.slug.as_str())
                            .bind(categories(study))
                            .bind(to_millis(now))
                            .execute(&mut *tx)
                            .await?;
                        report.announced.push(study.slug.to_string());
                    } else {
                        report.seeded += 1;
                    }
                }
            }
        }
        if !self.seeded {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(SEEDED_KEY)
            .bind(now.to_rfc3339())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.seeded = true;
        self.known.extend(inserted);
        if !report.announced.is_empty() {
            metrics::counter!("casewire_case_studies_published_total")
                .increment(report.announced.len() as u64);
        }
        Ok(report)
    }
}

/// One new publication row; 0 when another daemon sharing the database
/// recorded the slug first.
async fn insert_publication(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    study: &CaseStudy,
    now: DateTime<Utc>,
    announce: bool,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO publications (slug, title, categories, published_at, first_seen_at, content_hash, updated_at, announced)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (slug) DO NOTHING",
    )
    .bind(study.slug.as_str())
    .bind(&study.title)
    .bind(categories(study))
    .bind(to_millis(study.published))
    .bind(to_millis(now))
    .bind(&study.hash)
    .bind(to_millis(now))
    .bind(i64::from(announce))
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

fn categories(study: &CaseStudy) -> String {
    study
        .categories
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
