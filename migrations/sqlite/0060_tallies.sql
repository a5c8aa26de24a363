-- Counts the console's overview shows on every load: subscribers by status,
-- outbox rows by state, and the messages sent per hour (the bounce and
-- complaint rates' denominators over 7 and 30 days). Counting them from the
-- tables reads a million index entries each on a large list; these rows are
-- kept current by triggers instead, so the overview reads a few hundred.
--
-- Every write to `subscribers.status` and `outbox.state` goes through the
-- triggers below. A later migration that rebuilds either table (SQLite's
-- way of altering a column) drops its triggers with it and must create
-- them again. SQLite has one writer at a time, so the counters are updated
-- in place; PostgreSQL appends deltas instead (see its migration).
CREATE TABLE tallies (
    kind TEXT   NOT NULL,   -- 'subscribers' (by status) | 'outbox' (by state) | 'sent_hour' | 'run'
    key  TEXT   NOT NULL,   -- sent_hour: hours since the epoch of `sent_at`, 10 digits
    n    BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- Written by PostgreSQL's triggers only; here it stays empty, and the query
-- that reads the tallies is the same on both engines.
CREATE TABLE tally_deltas (
    kind TEXT   NOT NULL,
    key  TEXT   NOT NULL,
    n    BIGINT NOT NULL
);

INSERT INTO tallies (kind, key, n)
    SELECT 'subscribers', status, COUNT(*) FROM subscribers GROUP BY status;
INSERT INTO tallies (kind, key, n)
    SELECT 'outbox', state, COUNT(*) FROM outbox GROUP BY state;
INSERT INTO tallies (kind, key, n)
    SELECT 'sent_hour', printf('%010d', sent_at / 3600000), COUNT(*) FROM outbox
    WHERE state = 'sent' AND sent_at IS NOT NULL GROUP BY 2;
INSERT INTO tallies (kind, key, n)
    SELECT 'run', substr(outbox.dedupe_key, 1, length(outbox.dedupe_key) - length(outbox.subscriber_id)) || state, COUNT(*) FROM outbox
    WHERE outbox.kind = 'digest' AND outbox.subscriber_id IS NOT NULL AND substr(outbox.dedupe_key, -length(outbox.subscriber_id) - 1) = ':' || outbox.subscriber_id GROUP BY 2;
INSERT INTO tallies (kind, key, n)
    SELECT 'run', substr(outbox.dedupe_key, 1, length(outbox.dedupe_key) - length(outbox.subscriber_id)) || '+retried', COUNT(*) FROM outbox
    WHERE outbox.kind = 'digest' AND outbox.subscriber_id IS NOT NULL AND substr(outbox.dedupe_key, -length(outbox.subscriber_id) - 1) = ':' || outbox.subscriber_id AND attempts > 1 GROUP BY 2;

CREATE TRIGGER tally_subscribers_insert AFTER INSERT ON subscribers
BEGIN
    INSERT INTO tallies (kind, key, n) VALUES ('subscribers', NEW.status, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tally_subscribers_delete AFTER DELETE ON subscribers
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'subscribers' AND key = OLD.status;
END;

CREATE TRIGGER tally_subscribers_update AFTER UPDATE OF status ON subscribers
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'subscribers' AND key = OLD.status;
    INSERT INTO tallies (kind, key, n) VALUES ('subscribers', NEW.status, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tally_outbox_insert AFTER INSERT ON outbox
BEGIN
    INSERT INTO tallies (kind, key, n) VALUES ('outbox', NEW.state, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tally_outbox_delete AFTER DELETE ON outbox
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'outbox' AND key = OLD.state;
END;

CREATE TRIGGER tally_outbox_update AFTER UPDATE OF state ON outbox
WHEN OLD.state IS NOT NEW.state
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'outbox' AND key = OLD.state;
    INSERT INTO tallies (kind, key, n) VALUES ('outbox', NEW.state, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

-- Rows in state 'sent', by the hour of their `sent_at`.
CREATE TRIGGER tally_sent_insert AFTER INSERT ON outbox
WHEN NEW.state = 'sent' AND NEW.sent_at IS NOT NULL
BEGIN
    INSERT INTO tallies (kind, key, n) VALUES ('sent_hour', printf('%010d', NEW.sent_at / 3600000), 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tally_sent_delete AFTER DELETE ON outbox
WHEN OLD.state = 'sent' AND OLD.sent_at IS NOT NULL
BEGIN
    UPDATE tallies SET n = n - 1
        WHERE kind = 'sent_hour' AND key = printf('%010d', OLD.sent_at / 3600000);
END;

CREATE TRIGGER tally_sent_update AFTER UPDATE OF state, sent_at ON outbox
WHEN (OLD.state = 'sent' OR NEW.state = 'sent')
    AND (OLD.state IS NOT NEW.state OR OLD.sent_at IS NOT NEW.sent_at)
BEGIN
    UPDATE tallies SET n = n - 1
        WHERE OLD.state = 'sent' AND OLD.sent_at IS NOT NULL
          AND kind = 'sent_hour' AND key = printf('%010d', OLD.sent_at / 3600000);
    INSERT INTO tallies (kind, key, n)
        SELECT 'sent_hour', printf('%010d', NEW.sent_at / 3600000), 1
        WHERE NEW.state = 'sent' AND NEW.sent_at IS NOT NULL
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

-- Each edition run's digests by state, and those that took more than one
-- attempt. A digest's dedupe key is `digest:{edition}:{window}:{subscriber
-- id}`; its run's counters are keyed by the key without the id, then the
-- state (or `+retried`).
CREATE TRIGGER tally_run_insert AFTER INSERT ON outbox
WHEN NEW.kind = 'digest' AND NEW.subscriber_id IS NOT NULL AND substr(NEW.dedupe_key, -length(NEW.subscriber_id) - 1) = ':' || NEW.subscriber_id
BEGIN
    INSERT INTO tallies (kind, key, n) VALUES ('run', substr(NEW.dedupe_key, 1, length(NEW.dedupe_key) - length(NEW.subscriber_id)) || NEW.state, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
    INSERT INTO tallies (kind, key, n)
        SELECT 'run', substr(NEW.dedupe_key, 1, length(NEW.dedupe_key) - length(NEW.subscriber_id)) || '+retried', 1 WHERE NEW.attempts > 1
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tally_run_delete AFTER DELETE ON outbox
WHEN OLD.kind = 'digest' AND OLD.subscriber_id IS NOT NULL AND substr(OLD.dedupe_key, -length(OLD.subscriber_id) - 1) = ':' || OLD.subscriber_id
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'run' AND key = substr(OLD.dedupe_key, 1, length(OLD.dedupe_key) - length(OLD.subscriber_id)) || OLD.state;
    UPDATE tallies SET n = n - 1
        WHERE OLD.attempts > 1 AND kind = 'run' AND key = substr(OLD.dedupe_key, 1, length(OLD.dedupe_key) - length(OLD.subscriber_id)) || '+retried';
END;

CREATE TRIGGER tally_run_update AFTER UPDATE OF state, attempts ON outbox
WHEN NEW.kind = 'digest' AND NEW.subscriber_id IS NOT NULL AND substr(NEW.dedupe_key, -length(NEW.subscriber_id) - 1) = ':' || NEW.subscriber_id
    AND (OLD.state IS NOT NEW.state OR (OLD.attempts > 1) IS NOT (NEW.attempts > 1))
BEGIN
    UPDATE tallies SET n = n - 1
        WHERE OLD.state IS NOT NEW.state AND kind = 'run' AND key = substr(OLD.dedupe_key, 1, length(OLD.dedupe_key) - length(OLD.subscriber_id)) || OLD.state;
    INSERT INTO tallies (kind, key, n)
        SELECT 'run', substr(NEW.dedupe_key, 1, length(NEW.dedupe_key) - length(NEW.subscriber_id)) || NEW.state, 1 WHERE OLD.state IS NOT NEW.state
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
    UPDATE tallies SET n = n - 1
        WHERE OLD.attempts > 1 AND NOT NEW.attempts > 1
          AND kind = 'run' AND key = substr(OLD.dedupe_key, 1, length(OLD.dedupe_key) - length(OLD.subscriber_id)) || '+retried';
    INSERT INTO tallies (kind, key, n)
        SELECT 'run', substr(NEW.dedupe_key, 1, length(NEW.dedupe_key) - length(NEW.subscriber_id)) || '+retried', 1 WHERE NEW.attempts > 1 AND NOT OLD.attempts > 1
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;
