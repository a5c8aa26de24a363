-- Bounce and complaint rates count the digests sent in a window
-- (`state = 'sent' AND sent_at >= ?`). With `sent_at` alone every match was
-- a table lookup to check its state: on a million sent rows the console's
-- first overview spent most of its time there. The pair answers the count
-- from the index; it replaces the old one, so sends update no more indexes.
DROP INDEX outbox_sent_at;
CREATE INDEX outbox_state_sent_at ON outbox (state, sent_at);
