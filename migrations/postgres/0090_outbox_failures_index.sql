-- Every row's way out of the outbox (queued, sending, sent) wrote an entry
-- into `outbox_state_sent_at` at each step, for the sake of two readers:
-- the sent counts of the bounce rates, which the tallies answer now
-- (migration 0060), and the console's recent failures, which used it to
-- pick rows by state. The failures get an index of their own that holds
-- only failed rows (a successful send clears `last_error`), so a send
-- writes one index entry fewer at each of its three steps.
DROP INDEX outbox_state_sent_at;
CREATE INDEX outbox_failures ON outbox (updated_at, id)
    WHERE last_error IS NOT NULL AND state IN ('dead', 'queued', 'suppressed', 'expired');
