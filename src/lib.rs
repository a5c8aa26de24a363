//! casewire distributes a publication of engineering case studies: it watches
//! the content store, keeps RSS 2.0, Atom 1.0 and JSON Feed 1.1 feeds current,
//! and sends templated digest emails on schedules.
//!
//! # Layout
//! - [`cli`]: command-line definitions; [`commands`]: what each command does.
//! - [`config`]: the TOML file, environment overrides, validated [`config::Settings`].
//! - [`domain`]: newtypes built only by `parse` (slugs, addresses, tokens, time zones).
//! - [`content`]: case study model, front matter, Markdown, directory store, catalog.
//! - [`feeds`]: one view model, three writers (RSS, Atom, JSON), RFC 5005 history, atomic output.
//! - [`editions`]: schedules (per subscriber zone for `local_time` editions), segmentation, digest rendering, the public archive of runs.
//! - [`store`]: SQLite/PostgreSQL access; the publication ledger.
//! - [`subscribers`]: sign-up, confirmation, preferences, unsubscribe, import/export.
//! - [`bounces`]: DSN/ARF parsing, the bounce mailbox, ESP webhooks, VERP, the bounce policy.
//! - [`delivery`]: the outbox's delivery worker, transports (SMTP pool, .eml files), DKIM,
//!   the failure policy (`delivery::policy`) and the relay's circuit breaker (`delivery::relay`).
//! - [`publisher`]: the content pipeline task: catalog snapshot, feeds, ledger.
//! - [`http`]: axum routes; [`app`]: wires the daemon's tasks and shutdown.
//! - [`admin`]: operator accounts of the console (`http::admin`): names, argon2id
//!   password hashes, session and CSRF tokens.
//! - [`keys`]: the server key file and the MACs derived from it.
//! - [`http`]: axum routes and the connection layer (deadlines, caps); [`app`]: wires the daemon's tasks and shutdown.
//! - [`descriptors`]: the file descriptor budget (`RLIMIT_NOFILE`) and retries when it runs out.
//! - [`health`]: each component's current problem, for `/healthz` and `status`.
//! - [`signals`]: the wake-up handles tasks send each other.
//! - [`telemetry`]: the Prometheus recorder.
//! - [`templates`]: minijinja environments for e-mail and pages.

pub mod admin;
pub mod app;
pub mod bounces;
pub mod cli;
pub mod commands;
pub mod config;
pub mod content;
pub mod delivery;
pub mod descriptors;
pub mod domain;
pub mod editions;
pub mod feeds;
pub mod health;
pub mod http;
pub mod keys;
pub mod publisher;
pub mod signals;
pub mod store;
pub mod subscribers;
pub mod telemetry;
pub mod templates;
