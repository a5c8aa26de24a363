-- The public archive: one row per edition run that carried case studies,
-- written when the run starts (before its digests are rendered, so each
-- digest can link to its page). Only what every reader of the run shares is
-- kept: the subject and the case studies as shown; never a name, an address,
-- a token or a personal link.
CREATE TABLE edition_archive (
    edition     TEXT NOT NULL,
    issue_key   TEXT NOT NULL,            -- the page's path segment: YYYY-MM-DD, YYYY-MM-DD-2 for a second run that day
    window_key  TEXT NOT NULL,            -- the edition_runs window it came from
    local_date  TEXT NOT NULL,            -- the run's date in the edition's time zone
    seq         BIGINT NOT NULL,          -- 1 for the first run of local_date, 2 for the next, ...
    run_at      BIGINT NOT NULL,          -- milliseconds since the Unix epoch, UTC: the run's window time
    high_water  BIGINT NOT NULL,          -- publication_events.id the issue covers up to
    subject     TEXT NOT NULL,
    item_count  BIGINT NOT NULL,          -- case studies in the issue
    content     TEXT NOT NULL,            -- JSON: the case studies grouped by category, as the page shows them
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (edition, issue_key),
    UNIQUE (edition, window_key),
    UNIQUE (edition, local_date, seq)
);
