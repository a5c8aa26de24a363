-- Counts the console's overview shows on every load: subscribers by status,
-- outbox rows by state, and the messages sent per hour (the bounce and
-- complaint rates' denominators over 7 and 30 days). Counting them from the
-- tables reads a million index entries each on a large list; these rows are
-- kept current by triggers instead, so the overview reads a few hundred.
--
-- Many connections write here at once, and a transaction that moves rows
-- between states in more than one statement would lock shared counter rows
-- in differing orders (a deadlock). So each statement appends its net change
-- per key to `tally_deltas`, which nothing else locks, and the reader folds
-- the deltas into `tallies` (store::admin::tallies) before it reads them.
CREATE TABLE tallies (
    kind TEXT   NOT NULL,   -- 'subscribers' (by status) | 'outbox' (by state) | 'sent_hour' | 'run'
    key  TEXT   NOT NULL,   -- sent_hour: hours since the epoch of `sent_at`, 10 digits
    n    BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);

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
    SELECT 'sent_hour', lpad((sent_at / 3600000)::text, 10, '0'), COUNT(*) FROM outbox
    WHERE state = 'sent' AND sent_at IS NOT NULL GROUP BY 2;
INSERT INTO tallies (kind, key, n)
    SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || state, COUNT(*)
    FROM outbox WHERE kind = 'digest' AND subscriber_id IS NOT NULL
        AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
    GROUP BY 2;
INSERT INTO tallies (kind, key, n)
    SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || '+retried', COUNT(*)
    FROM outbox WHERE kind = 'digest' AND subscriber_id IS NOT NULL AND attempts > 1
        AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
    GROUP BY 2;

-- One function per table and event: a statement-level trigger sees the rows
-- it changed as transition tables, and only one event may have them.
CREATE FUNCTION tally_subscribers_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas (kind, key, n)
        SELECT 'subscribers', status, COUNT(*) FROM new_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION tally_subscribers_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas (kind, key, n)
        SELECT 'subscribers', status, -COUNT(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION tally_subscribers_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas (kind, key, n)
        SELECT 'subscribers', key, SUM(d) FROM (
            SELECT status AS key, -1 AS d FROM old_rows
            UNION ALL
            SELECT status, 1 FROM new_rows
        ) moved GROUP BY key HAVING SUM(d) <> 0;
    RETURN NULL;
END $$;

-- The outbox's three counts: rows by state; sent rows by the hour of
-- `sent_at`; and each edition run's digests by state, plus those that took
-- more than one attempt. A digest's dedupe key is
-- `digest:{edition}:{window}:{subscriber id}`; its run's counters are keyed
-- by the key without the id, then the state (or `+retried`).
CREATE FUNCTION tally_outbox_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas (kind, key, n)
        SELECT kind, key, SUM(d) FROM (
            SELECT 'outbox' AS kind, state AS key, 1 AS d FROM new_rows
            UNION ALL
            SELECT 'sent_hour', lpad((sent_at / 3600000)::text, 10, '0'), 1 FROM new_rows
            WHERE state = 'sent' AND sent_at IS NOT NULL
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || state, 1
            FROM new_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || '+retried', 1
            FROM new_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL AND attempts > 1
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
        ) moved GROUP BY kind, key HAVING SUM(d) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION tally_outbox_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas (kind, key, n)
        SELECT kind, key, SUM(d) FROM (
            SELECT 'outbox' AS kind, state AS key, -1 AS d FROM old_rows
            UNION ALL
            SELECT 'sent_hour', lpad((sent_at / 3600000)::text, 10, '0'), -1 FROM old_rows
            WHERE state = 'sent' AND sent_at IS NOT NULL
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || state, -1
            FROM old_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || '+retried', -1
            FROM old_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL AND attempts > 1
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
        ) moved GROUP BY kind, key HAVING SUM(d) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION tally_outbox_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas (kind, key, n)
        SELECT kind, key, SUM(d) FROM (
            SELECT 'outbox' AS kind, state AS key, -1 AS d FROM old_rows
            UNION ALL
            SELECT 'sent_hour', lpad((sent_at / 3600000)::text, 10, '0'), -1 FROM old_rows
            WHERE state = 'sent' AND sent_at IS NOT NULL
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || state, -1
            FROM old_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || '+retried', -1
            FROM old_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL AND attempts > 1
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
            UNION ALL
            SELECT 'outbox' AS kind, state AS key, 1 AS d FROM new_rows
            UNION ALL
            SELECT 'sent_hour', lpad((sent_at / 3600000)::text, 10, '0'), 1 FROM new_rows
            WHERE state = 'sent' AND sent_at IS NOT NULL
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || state, 1
            FROM new_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
            UNION ALL
            SELECT 'run', left(dedupe_key, length(dedupe_key) - length(subscriber_id::text)) || '+retried', 1
            FROM new_rows WHERE kind = 'digest' AND subscriber_id IS NOT NULL AND attempts > 1
                AND right(dedupe_key, length(subscriber_id::text) + 1) = ':' || subscriber_id::text
        ) moved GROUP BY kind, key HAVING SUM(d) <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER tally_subscribers_insert AFTER INSERT ON subscribers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_subscribers_insert();
CREATE TRIGGER tally_subscribers_delete AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_subscribers_delete();
CREATE TRIGGER tally_subscribers_update AFTER UPDATE ON subscribers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_subscribers_update();

CREATE TRIGGER tally_outbox_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_outbox_insert();
CREATE TRIGGER tally_outbox_delete AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_outbox_delete();
CREATE TRIGGER tally_outbox_update AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_outbox_update();
