-- Local send time (editions with `local_time = true`).
--
-- A subscriber's own IANA time zone; NULL means "the edition's zone". The
-- index lets a run for one zone read only that zone's subscribers.
ALTER TABLE subscribers ADD COLUMN timezone TEXT;
CREATE INDEX subscribers_timezone ON subscribers (timezone, id);

-- The zone a scheduled window was fired in ('' for an edition that fires in
-- its own zone only). Window keys of a zone end in "@<zone>", so each
-- (edition, zone) has its own windows and its latest one sorts last.
ALTER TABLE edition_runs ADD COLUMN zone TEXT NOT NULL DEFAULT '';

-- The fire time (milliseconds, UTC) of the scheduled window whose digest
-- this subscriber last got in this edition. A run of a local-time zone skips
-- a subscriber whose last digest already falls into its period, so moving
-- to another zone never brings two digests in one period.
ALTER TABLE subscriber_editions ADD COLUMN last_window_at BIGINT;
