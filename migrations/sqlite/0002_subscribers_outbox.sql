-- Subscribers, their choices, tokens, suppressions, the outbox and edition runs.
-- Times are milliseconds since the Unix epoch, UTC.

CREATE TABLE subscribers (
    id                         INTEGER PRIMARY KEY AUTOINCREMENT,
    email                      TEXT NOT NULL UNIQUE,      -- normalized (see domain::EmailAddress)
    name                       TEXT NOT NULL DEFAULT '',
    status                     TEXT NOT NULL,             -- pending | confirmed | unsubscribed
    source                     TEXT NOT NULL,             -- form | api | cli | import
    created_at                 BIGINT NOT NULL,
    confirmed_at               BIGINT,
    unsubscribed_at            BIGINT,
    last_confirmation_sent_at  BIGINT
);
CREATE INDEX subscribers_status ON subscribers (status, id);

-- No rows: the subscriber follows every category.
CREATE TABLE subscriber_categories (
    subscriber_id  BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    category       TEXT NOT NULL,
    PRIMARY KEY (subscriber_id, category)
);

-- The editions a subscriber receives. `cursor_event_id` is the last
-- publication event already covered for them in that edition: a digest holds
-- events above it, and advancing it commits in the same transaction as the
-- outbox row (DESIGN.md invariant 2).
CREATE TABLE subscriber_editions (
    subscriber_id    BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    edition          TEXT NOT NULL,
    cursor_event_id  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subscriber_id, edition)
);
CREATE INDEX subscriber_editions_edition ON subscriber_editions (edition, subscriber_id);

-- Only the SHA-256 of a token is stored. purpose: confirm | manage.
CREATE TABLE tokens (
    hash           TEXT PRIMARY KEY,
    subscriber_id  BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    purpose        TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT
);
CREATE INDEX tokens_subscriber ON tokens (subscriber_id, purpose);

-- Addresses that must never be mailed again (5xx, complaints, operator).
CREATE TABLE suppressions (
    email       TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Rendered content shared by many outbox rows (one per distinct digest content set).
CREATE TABLE outbox_bodies (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    subject     TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- One row per message to send. Every row ends sent, suppressed or dead
-- (DESIGN.md invariant 6). `dedupe_key` makes enqueueing idempotent, e.g.
-- "digest:weekly:2026-11-23T07:00:00Z:42" or "confirm:42:1763700000000".
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key       TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,           -- confirmation | digest
    edition          TEXT,                    -- NULL for transactional mail
    subscriber_id    BIGINT,
    recipient        TEXT NOT NULL,
    body_id          BIGINT REFERENCES outbox_bodies(id),
    message          TEXT,                    -- a whole RFC 5322 message, or NULL when body_id + vars build it
    vars             TEXT NOT NULL DEFAULT '{}', -- JSON: per-recipient values (name, links)
    state            TEXT NOT NULL,           -- queued | sending | sent | suppressed | dead
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_edition ON outbox (edition, state);

-- Edition runs: one row per edition and window (the scheduled fire time, or
-- the event high-water mark of an instant edition).
CREATE TABLE edition_runs (
    edition        TEXT NOT NULL,
    window_key     TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    high_water     BIGINT NOT NULL,           -- publication_events.id covered by this run
    enqueued       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (edition, window_key)
);
