-- The publication ledger: every case study casewire has seen published.
-- Times are milliseconds since the Unix epoch, UTC.
CREATE TABLE publications (
    slug           TEXT PRIMARY KEY,
    title          TEXT NOT NULL,
    categories     TEXT NOT NULL,          -- comma-separated category slugs
    published_at   BIGINT NOT NULL,        -- the case study's own date
    first_seen_at  BIGINT NOT NULL,        -- when casewire first saw it published
    content_hash   TEXT NOT NULL,
    updated_at     BIGINT NOT NULL,
    announced      BIGINT NOT NULL         -- 0: seeded at first start, never announced
);

-- One durable event per newly published case study; editions consume them.
CREATE TABLE publication_events (
    id             BIGSERIAL PRIMARY KEY,
    slug           TEXT NOT NULL UNIQUE REFERENCES publications(slug),
    categories     TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
