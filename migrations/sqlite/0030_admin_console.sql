-- The operator console (/admin/): named operators, their sessions and the
-- audit log of what they did. Times are milliseconds since the Unix epoch, UTC.

-- Passwords only as argon2id PHC strings (DESIGN.md invariant 10).
CREATE TABLE admin_users (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL UNIQUE,
    password_hash    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    password_set_at  BIGINT NOT NULL,
    must_change      BIGINT NOT NULL DEFAULT 0  -- 1: a one-time password, replaced at the next login
);

-- One row per signed-in browser. Only the SHA-256 of the cookie's token is
-- stored; a session ends idle (last_seen_at) or absolutely (created_at).
CREATE TABLE admin_sessions (
    token_hash    TEXT PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    ip            TEXT NOT NULL DEFAULT ''
);
CREATE INDEX admin_sessions_user ON admin_sessions (user_id);

-- Every action an operator took (console, or the admin CLI as "cli").
-- The name is copied, not referenced: the record outlives the account.
CREATE TABLE admin_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,            -- e.g. login, subscriber.unsubscribe, edition.send
    target  TEXT NOT NULL DEFAULT '', -- the address, edition or account acted on
    detail  TEXT NOT NULL DEFAULT '',
    ip      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX admin_audit_target ON admin_audit (target, id);
CREATE INDEX admin_audit_action ON admin_audit (action, id);

-- A subscriber's page lists the digests sent to them; erasing a subscriber
-- deletes their rows. Both read by subscriber instead of scanning the outbox.
CREATE INDEX outbox_subscriber ON outbox (subscriber_id, id);
