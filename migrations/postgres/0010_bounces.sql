-- Bounces and complaints reported after the SMTP transaction (DSNs and
-- feedback reports from the bounce mailbox, ESP webhooks) and hard bounces
-- seen during it. Only the parsed fields are kept, never the raw message.
-- `event_key` makes recording idempotent: the same DSN or webhook twice is
-- one row.
CREATE TABLE bounce_events (
    id          BIGSERIAL PRIMARY KEY,
    event_key   TEXT NOT NULL UNIQUE,
    email       TEXT NOT NULL,
    kind        TEXT NOT NULL,            -- hard | soft | complaint
    status      TEXT,                     -- RFC 3463 code, e.g. 5.1.1
    diagnostic  TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL,            -- smtp | dsn | arf | ses | postmark | sendgrid | mailgun
    outbox_id   BIGINT,
    edition     TEXT,
    window_key  TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX bounce_events_email ON bounce_events (email, kind, created_at);
CREATE INDEX bounce_events_created ON bounce_events (created_at);
CREATE INDEX bounce_events_run ON bounce_events (edition, window_key);
CREATE INDEX outbox_sent_at ON outbox (sent_at);
