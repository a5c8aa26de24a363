-- The send path moves every digest twice (queued -> sending -> sent), and
-- row-by-row triggers cost it about as much CPU again as sending. So the
-- statements that queue, claim and mark rows sent in bulk count their own
-- batch, one counter change per key (store::tallies::Batch), and while they
-- do the triggers below step aside: inside its transaction the statement's
-- code holds the row in `tally_batch`, which no other connection ever sees
-- (the row is deleted before commit, and SQLite has one writer). Every
-- other write, a hand edit included, is still counted by the triggers.
CREATE TABLE tally_batch (
    one INTEGER PRIMARY KEY CHECK (one = 1)
);

DROP TRIGGER tally_outbox_insert;
CREATE TRIGGER tally_outbox_insert AFTER INSERT ON outbox
WHEN NOT EXISTS (SELECT 1 FROM tally_batch)
BEGIN
    INSERT INTO tallies (kind, key, n) VALUES ('outbox', NEW.state, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

DROP TRIGGER tally_outbox_update;
CREATE TRIGGER tally_outbox_update AFTER UPDATE OF state ON outbox
WHEN NOT EXISTS (SELECT 1 FROM tally_batch) AND OLD.state IS NOT NEW.state
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'outbox' AND key = OLD.state;
    INSERT INTO tallies (kind, key, n) VALUES ('outbox', NEW.state, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

DROP TRIGGER tally_sent_insert;
CREATE TRIGGER tally_sent_insert AFTER INSERT ON outbox
WHEN NOT EXISTS (SELECT 1 FROM tally_batch) AND NEW.state = 'sent' AND NEW.sent_at IS NOT NULL
BEGIN
    INSERT INTO tallies (kind, key, n) VALUES ('sent_hour', printf('%010d', NEW.sent_at / 3600000), 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

DROP TRIGGER tally_sent_update;
CREATE TRIGGER tally_sent_update AFTER UPDATE OF state, sent_at ON outbox
WHEN NOT EXISTS (SELECT 1 FROM tally_batch) AND (OLD.state = 'sent' OR NEW.state = 'sent')
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

DROP TRIGGER tally_run_insert;
CREATE TRIGGER tally_run_insert AFTER INSERT ON outbox
WHEN NOT EXISTS (SELECT 1 FROM tally_batch) AND NEW.kind = 'digest' AND NEW.subscriber_id IS NOT NULL AND substr(NEW.dedupe_key, -length(NEW.subscriber_id) - 1) = ':' || NEW.subscriber_id
BEGIN
    INSERT INTO tallies (kind, key, n) VALUES ('run', substr(NEW.dedupe_key, 1, length(NEW.dedupe_key) - length(NEW.subscriber_id)) || NEW.state, 1)
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
    INSERT INTO tallies (kind, key, n)
        SELECT 'run', substr(NEW.dedupe_key, 1, length(NEW.dedupe_key) - length(NEW.subscriber_id)) || '+retried', 1 WHERE NEW.attempts > 1
        ON CONFLICT (kind, key) DO UPDATE SET n = n + 1;
END;

DROP TRIGGER tally_run_update;
CREATE TRIGGER tally_run_update AFTER UPDATE OF state, attempts ON outbox
WHEN NOT EXISTS (SELECT 1 FROM tally_batch) AND NEW.kind = 'digest' AND NEW.subscriber_id IS NOT NULL AND substr(NEW.dedupe_key, -length(NEW.subscriber_id) - 1) = ':' || NEW.subscriber_id
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
