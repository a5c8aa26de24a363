-- Editions that paused themselves: ten messages in a row refused after DATA
-- (the content is being refused). Their outbox rows are not claimed until
-- `casewire digest resume EDITION` deletes the row.
CREATE TABLE edition_pauses (
    edition    TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,             -- what happened and what to do, for status and the log
    paused_at  BIGINT NOT NULL            -- milliseconds since the Unix epoch, UTC
);
