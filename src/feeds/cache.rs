//! Feeds held in memory for HTTP: the bytes, a strong ETag and a
//! Last-Modified time, computed once per change rather than per request, and
//! a gzip copy made on the first request that asks for it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{FeedFile, Format};

#[derive(Debug)]
pub struct CachedFeed {
    pub format: Format,
    pub body: Bytes,
    /// Compressed on the first request that accepts gzip: a long history has
    /// many archive documents that few clients ever fetch.
    gzip: std::sync::OnceLock<Bytes>,
    /// Strong validator of the identity encoding, quoted.
    pub etag: String,
    /// Strong validator of the gzip encoding, quoted (another representation, another tag).
    pub etag_gzip: String,
    pub last_modified: DateTime<Utc>,
    /// A full archive document, served as immutable.
    pub immutable: bool,
    /// Of the inputs of an archive document (see `FeedFile::fingerprint`).
    pub fingerprint: Option<[u8; 16]>,
}

/// Path (e.g. "databases/rss.xml") to feed. Replaced whole on change.
#[derive(Debug, Default, Clone)]
pub struct FeedCache {
    feeds: HashMap<String, Arc<CachedFeed>>,
}

impl FeedCache {
    pub fn get(&self, path: &str) -> Option<&Arc<CachedFeed>> {
        self.feeds.get(path)
    }

    /// Every path held.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.feeds.keys().map(String::as_str)
    }

    /// Drops `paths` (archive documents that no longer exist).
    pub fn retire(&mut self, paths: &[String]) {
        for p in paths {
            self.feeds.remove(p);
        }
    }

    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// A cache with `files` replacing their paths; returns it and the paths
    /// whose bytes actually changed (what WebSub hubs must hear about).
    /// `now` is the Last-Modified of changed feeds; a feed seen for the first
    /// time takes its own updated date, so restarts do not look like changes.
    pub fn with(
        &self,
        files: &[FeedFile],
        now: DateTime<Utc>,
        keep_only: Option<&[String]>,
    ) -> (FeedCache, Vec<String>) {
        let mut feeds = self.feeds.clone();
        if let Some(keep) = keep_only {
            feeds.retain(|k, _| keep.contains(k));
        }
        let mut changed = Vec::new();
        for f in files {
            let prev = self.feeds.get(&f.path);
            if prev.is_some_and(|p| p.body.as_ref() == f.body.as_ref()) {
                // Same bytes; a page that just filled up is now immutable.
                if prev
                    .is_some_and(|p| p.immutable != f.immutable || p.fingerprint != f.fingerprint)
                {
                    let p = prev.expect("checked");
                    feeds.insert(
                        f.path.clone(),
                        Arc::new(CachedFeed {
                            format: p.format,
                            body: p.body.clone(),
                            gzip: p.gzip.clone(),
                            etag: p.etag.clone(),
                            etag_gzip: p.etag_gzip.clone(),
                            last_modified: p.last_modified,
                            immutable: f.immutable,
                            fingerprint: f.fingerprint,
                        }),
                    );
                }
                continue;
            }
            let last_modified = match prev {
                Some(p) => now.max(p.last_modified),
                None => f.updated,
            };
            changed.push(f.path.clone());
            feeds.insert(f.path.clone(), Arc::new(CachedFeed::new(f, last_modified)));
        }
        (FeedCache { feeds }, changed)
    }
}

impl CachedFeed {
    /// The gzip encoding of the body (computed once).
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.body.len() / 3),
                    flate2::Compression::default(),
                );
                gz.write_all(&self.body)
                    .expect("writing to a Vec cannot fail");
                Bytes::from(gz.finish().expect("writing to a Vec cannot fail"))
            })
            .clone()
    }

    fn new(file: &FeedFile, last_modified: DateTime<Utc>) -> Self {
        let digest = hex::encode(&Sha256::digest(&file.body)[..12]);
        Self {
            format: file.format,
            // Shares the build's bytes instead of copying them.
            body: Bytes::from_owner(file.body.clone()),
            gzip: std::sync::OnceLock::new(),
            etag: format!("\"{digest}\""),
            etag_gzip: format!("\"{digest}-gz\""),
            // HTTP dates have whole seconds; comparisons must agree with what we send.
            last_modified: DateTime::from_timestamp(last_modified.timestamp(), 0)
                .unwrap_or(last_modified),
            immutable: file.immutable,
            fingerprint: file.fingerprint,
        }
    }
}
