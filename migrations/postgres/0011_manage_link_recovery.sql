-- When a "here is your manage link" mail was last queued for a subscriber
-- (milliseconds, UTC): at most one per address per hour.
ALTER TABLE subscribers ADD COLUMN last_link_sent_at BIGINT;
