-- Links are signed at send time (subscribers::links) instead of stored as
-- token rows. A subscriber's link_version is part of every link made for
-- them; raising it (unsubscribe) invalidates all links sent before.
-- The tokens table keeps only rows from the earlier scheme, each accepted
-- once more and then deleted.
ALTER TABLE subscribers ADD COLUMN link_version BIGINT NOT NULL DEFAULT 0;
