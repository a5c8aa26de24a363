-- Claims walk due rows in (next_attempt_at, id) order. With these indexes a
-- claim reads only the rows it takes, instead of every row of an edition
-- followed by a sort (which made a 100,000-row run quadratic).
DROP INDEX outbox_due;
DROP INDEX outbox_edition;
CREATE INDEX outbox_due ON outbox (state, next_attempt_at, id);
CREATE INDEX outbox_edition_due ON outbox (edition, state, next_attempt_at, id);
CREATE INDEX outbox_lease ON outbox (state, lease_until);
